"""Making weights: PANORAMA data -> nnU-Net datasets (prepare), losses and trainers, training with
nnU-Net's own machinery (training), and checkpoint selection by the challenge metric."""
