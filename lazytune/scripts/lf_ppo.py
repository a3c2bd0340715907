"""Run LLaMA-Factory's PPO stage from a YAML config: `python lf_ppo.py train.yaml` (standalone; never imports lazytune).

LLaMA-Factory 0.9.5's PPO trainer needs trl <= 0.9.6, while `llamafactory-cli train` imports every stage (the
others need trl 0.24) before choosing one. So the `llamafactory-ppo` environment (trl 0.9.6) runs this script, which
does what `llamafactory-cli train` does for `stage: ppo` (same argument parsing, same log callback) and imports
the PPO workflow only. Needs DISABLE_VERSION_CHECK=1 (LF's startup check wants trl >= 0.18).
"""

import sys


def _transformers5_shim() -> None:
    """LF 0.9.5's PPO trainer (written for transformers 4.x) under transformers 5, in this process only:
    `tokenizer.additional_special_tokens_ids` became the extra special tokens, and `Trainer._save` reads
    `self.processing_class`, which the PPO trainer never sets (it keeps `self.tokenizer`)."""
    from llamafactory.train.ppo.trainer import CustomPPOTrainer
    from transformers import PreTrainedTokenizerBase

    if not hasattr(PreTrainedTokenizerBase, "additional_special_tokens_ids"):

        def ids(self):
            tokens = getattr(self, "extra_special_tokens", None) or getattr(self, "additional_special_tokens", None)
            return self.convert_tokens_to_ids(list(tokens or []))

        PreTrainedTokenizerBase.additional_special_tokens_ids = property(ids)
    if "processing_class" not in dir(CustomPPOTrainer):

        def get(self):
            return self.__dict__.get("_processing_class", getattr(self, "tokenizer", None))

        def set_(self, value):
            self.__dict__["_processing_class"] = value

        CustomPPOTrainer.processing_class = property(get, set_)


def main() -> int:
    if len(sys.argv) < 2 or not sys.argv[1].endswith((".yaml", ".yml", ".json")):
        print("usage: python lf_ppo.py train.yaml [key=value ...]", file=sys.stderr)
        return 2
    from llamafactory.hparams import get_train_args
    from llamafactory.train.callbacks import LogCallback, ReporterCallback
    from llamafactory.train.ppo.workflow import run_ppo

    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args()
    if finetuning_args.stage != "ppo":
        print(f"lf_ppo.py runs stage ppo only, the config says {finetuning_args.stage!r}", file=sys.stderr)
        return 2
    _transformers5_shim()
    callbacks = [LogCallback(), ReporterCallback(model_args, data_args, finetuning_args, generating_args)]
    run_ppo(model_args, data_args, training_args, finetuning_args, generating_args, callbacks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
