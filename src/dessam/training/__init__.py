"""Training: DES-SAM from boxes (the loop, its batches, the embedding cache, several processes),
and the pre-training of the bundled default teacher."""
