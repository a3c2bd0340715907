"""Write tiny random BERTs: an embedder (BertModel) and/or a reranker (BertForSequenceClassification, one label).

Standalone, offline: the WordPiece tokenizer is trained on a few KB of built-in text. Run it with the interpreter
that will train the models (tokenizers saved by transformers 5 don't load in 4.x):

    python make_tiny_bert.py [--embed DIR] [--rerank DIR] [--seed 0] [--hidden 32] [--layers 2]
"""

import argparse
import json
import sys
from pathlib import Path

WORDS = (
    "the a an of to in is on for with by at from as and or not this that these those it its be are was were "
    "cat dog bird fish horse cow sheep mouse lion tiger bear wolf fox duck goose frog snake whale shark "
    "red blue green yellow black white brown purple orange pink grey gold silver "
    "car bus train plane boat bike truck ship road rail street bridge station airport harbour "
    "apple banana cherry grape lemon melon peach pear plum bread cheese butter milk rice pasta soup "
    "python java rust code compile test model data train learn embed rank search query passage answer "
    "city river mountain forest ocean desert island valley lake beach village country capital "
    "one two three four five six seven eight nine ten hundred thousand first second last "
    "run walk swim fly eat drink read write sing play sleep think see hear speak build break "
    "big small fast slow hot cold new old good bad happy sad loud quiet bright dark "
    "what which who where when why how does do did can will would should could "
    "paris london berlin rome madrid tokyo beijing cairo lima oslo "
)


def corpus() -> list[str]:
    words = WORDS.split()
    # Sentences of shifted word windows: every word and frequent pairs show up, so WordPiece learns whole words.
    return [" ".join(words[i : i + 8]) for i in range(len(words))] + [" ".join(words)]


def make_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return BertTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512,
    )  # fmt: skip


def save(model, tokenizer, out: Path, kind: str, args: argparse.Namespace) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    info = {"arch": "bert", "kind": kind, "hidden": args.hidden, "layers": args.layers, "vocab": len(tokenizer),
            "params": n, "seed": args.seed}  # fmt: skip
    (out / "tiny_model.json").write_text(json.dumps(info, indent=2) + "\n")  # written last: marks a complete folder
    print(f"tiny BERT {kind}: {n} parameters, vocab {len(tokenizer)} -> {out}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--embed", type=Path, help="folder for the embedder (BertModel)")
    ap.add_argument("--rerank", type=Path, help="folder for the reranker (BertForSequenceClassification)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=600)
    args = ap.parse_args()
    if not (args.embed or args.rerank):
        ap.error("give --embed DIR and/or --rerank DIR")

    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(args.seed)
    tokenizer = make_tokenizer(args.vocab_size)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=2,
        intermediate_size=args.hidden * 2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        num_labels=1,
    )  # fmt: skip
    if args.embed:
        save(BertModel(config), tokenizer, args.embed, "embed", args)
    if args.rerank:
        save(BertForSequenceClassification(config), tokenizer, args.rerank, "rerank", args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
