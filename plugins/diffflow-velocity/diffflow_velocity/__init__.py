"""ScoreFlow / rectified-flow neural ODEs for diffflow (SPEC §4): the ``velocity`` flow, the ``flow-matching``
and ``path-constrained`` objectives, translation between distributions and classifier-free guidance."""
