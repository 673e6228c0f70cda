"""Everything about checkpoints: aliases, the model-family table, loading, timm, the forward pass, encoders, RUN_DIR models and cached embeddings."""
