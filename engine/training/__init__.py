"""Training like the study: cohort -> nnU-Net v2 dataset -> plan -> train -> model package -> tables.

Modules (torch and nnunetv2 are imported only inside functions):

- :mod:`.cohort` - cohort descriptions (CSV / JSON / folder), label maps, :func:`check_cohort`.
- :mod:`.dataset` - the nnU-Net raw dataset, the seeded 80/20 split, ``splits_final.json``.
- :mod:`.plans` - the small ``3d_small`` configuration added to nnUNetPlans.json.
- :mod:`.env` - nnU-Net's folders and worker counts for one run.
- :mod:`.runner` - planning/preprocessing/training in-process, slim checkpoints.
- :mod:`.export` - the model package (folder / zip + liverplan_model.json card).
- :mod:`.evaluate` - held-out / external evaluation and the study's tables.
- :mod:`.pipeline` - :class:`TrainOptions` and :func:`run_pipeline` (what ``main.py train`` runs).
- :mod:`.phantoms` - synthetic phantom cohorts (the demo model, the tests).
"""
