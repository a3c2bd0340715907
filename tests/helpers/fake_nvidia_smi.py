"""A stand-in `nvidia-smi` reporting chosen cards (no GPU on CI machines): the one thing these tests fake.

    bin_dir = install(tmp_path, [card("NVIDIA H100 80GB HBM3", 81559, cap="9.0")] * 2)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

It answers `--query-gpu=<fields> --format=csv,noheader,nounits` as the real one does; `old_driver=True` refuses the
`compute_cap` field as drivers before 510 do (the whole query fails).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPT = r'''#!{python}
import json, sys
cards = json.load(open({cards!r}))
old_driver = {old_driver!r}
args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
fields = args.get("--query-gpu", "").split(",")
if not fields or fields == [""] or (old_driver and "compute_cap" in fields):
    print('Field "compute_cap" is not a valid field to query.', file=sys.stderr)
    sys.exit(2)
for i, c in enumerate(cards):
    print(", ".join(str(c[f] if f != "index" else i) for f in fields))
'''


def card(name: str, total_mib: int, used_mib: int = 4, cap: str = "8.0", uuid: str | None = None) -> dict:
    return {"name": name, "memory.total": total_mib, "memory.used": used_mib, "memory.free": total_mib - used_mib,
            "compute_cap": cap, "uuid": uuid or "GPU-" + "0" * 8}


def install(folder: Path, cards: list[dict], old_driver: bool = False) -> Path:
    """Write `folder/bin/nvidia-smi` answering for `cards` (uuids made unique); returns the bin folder."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    cards = [{**c, "uuid": f"GPU-1a2b3c4d-0000-0000-0000-{i:012d}"} for i, c in enumerate(cards)]
    (bin_dir / "cards.json").write_text(json.dumps(cards))
    exe = bin_dir / "nvidia-smi"
    exe.write_text(SCRIPT.format(python=sys.executable, cards=str(bin_dir / "cards.json"), old_driver=old_driver))
    exe.chmod(0o755)
    return bin_dir
