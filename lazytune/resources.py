"""Files shipped with lazytune: config templates (configs/ in a checkout, lazytune/configs in a wheel)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def configs_dir() -> Path:
    """The folder of shipped configs, whether lazytune runs from a wheel or from a source checkout."""
    for root in (_HERE / "configs", _HERE.parent / "configs"):
        if root.is_dir():
            return root
    raise FileNotFoundError(f"lazytune's configs folder is missing (looked in {_HERE / 'configs'} and "
                            f"{_HERE.parent / 'configs'}): a broken install")


def config_file(*parts: str) -> Path:
    """Path of one shipped config, e.g. config_file("llama_factory", "sft.yaml")."""
    path = configs_dir().joinpath(*parts)
    if not path.is_file():
        raise FileNotFoundError(f"lazytune config missing: {path}")
    return path
