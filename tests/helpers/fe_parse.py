"""Parses argument lists with FlagEmbedding's own parser, as its module's `__main__` builds it (flagembedding env).

    python fe_parse.py JOBS.json  -> one JSON line: [{"args": {field: value}, "unknown": [...]}, ...]

JOBS.json is a list of {"module": "FlagEmbedding.finetune....", "argv": [...]}. Each module's `__main__` runs until
it calls HfArgumentParser.parse_args_into_dataclasses; there the parser it built reads `argv` with
parse_known_args (every dataclass field, defaults filled in, types converted) and the module stops before any
dataclass __post_init__ (which would want a GPU for fp16 and the deepspeed package for a DeepSpeed config).
"""

from __future__ import annotations

import json
import runpy
import sys

from transformers import HfArgumentParser


class Parsed(Exception):
    def __init__(self, values: dict, unknown: list[str]):
        super().__init__("parsed")
        self.values, self.unknown = values, unknown  # not .args: BaseException.args turns a dict into its keys


def main(path: str) -> None:
    jobs = json.loads(open(path, encoding="utf-8").read())
    current: list[str] = []

    def capture(self, *args, **kw):
        namespace, unknown = self.parse_known_args(args=current)
        raise Parsed(vars(namespace), unknown)

    HfArgumentParser.parse_args_into_dataclasses = capture
    out = []
    for job in jobs:
        current[:] = job["argv"]
        try:
            runpy.run_module(job["module"], run_name="__main__")
        except Parsed as parsed:
            out.append({"args": parsed.values, "unknown": parsed.unknown})
        else:
            raise SystemExit(f"{job['module']} never parsed its arguments")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
