"""What the model learned: embeddings and their continuity, UMAP, video Grad-CAM, distribution shift,
and the paper's ablations as commands. Reads models and data through the package's public functions."""
