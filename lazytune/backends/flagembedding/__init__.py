"""FlagEmbedding backend (`finetune.flagembedding`): embedder and reranker fine-tuning. args.py mirrors
FlagEmbedding's argument dataclasses (the whitelist), data.py checks query/pos/neg records, backend.py builds the
`torchrun -m FlagEmbedding.finetune...` plan."""

from .backend import FlagembeddingFinetune

__all__ = ["FlagembeddingFinetune"]
