"""Run LLaMA-Factory's PPO stage from a YAML config: `python lf_ppo.py train.yaml` (standalone; never imports lazytune).

LLaMA-Factory 0.9.5's PPO trainer needs trl <= 0.9.6, while `llamafactory-cli train` imports every stage (the
others need trl 0.24) before choosing one. So the `llamafactory-ppo` environment (trl 0.9.6) runs this script, which
does what `llamafactory-cli train` does for `stage: ppo` (same argument parsing, same log callback) and imports
the PPO workflow only. Needs DISABLE_VERSION_CHECK=1 (LF's startup check wants trl >= 0.18).
"""

import sys


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
    callbacks = [LogCallback(), ReporterCallback(model_args, data_args, finetuning_args, generating_args)]
    run_ppo(model_args, data_args, training_args, finetuning_args, generating_args, callbacks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
