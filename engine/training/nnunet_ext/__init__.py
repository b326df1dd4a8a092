"""nnU-Net trainer classes of LiverPlan (imports torch and nnunetv2: import only inside training code).

nnU-Net's own command-line tools find them through ``nnUNet_extTrainer`` pointing at this folder.
"""
