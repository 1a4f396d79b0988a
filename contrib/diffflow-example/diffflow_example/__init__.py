"""diffflow-example: a tiny third-party plugin that doubles as the template for writing one."""
