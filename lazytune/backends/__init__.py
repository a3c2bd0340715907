"""One module per backend. Each exposes one `Finetune` subclass."""
