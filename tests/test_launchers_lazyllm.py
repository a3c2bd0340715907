"""Launchers take LazyLLM's keywords and forms, or refuse them with did-you-mean (lazyllm/launcher/*.py,
tests/basic_tests/test_launcher.py); positional arguments follow LazyLLM's signatures."""

from __future__ import annotations

from pathlib import Path

import pytest

import launchers
from launchers import LauncherArgumentError
from lazytune import ConfigError, finetune


def test_slurm_lazyllm_keywords() -> None:
    """LazyLLM's test_slurm: slurm(partition='pat_rd', nnode=1, nproc=1, ngpus=1, sync=False)."""
    launcher = launchers.slurm(partition="pat_rd", nnode=1, nproc=1, ngpus=1, sync=False)
    r = launcher.resources
    assert (r.partition, r.nnodes, r.ntasks_per_node, r.ngpus, launcher.sync) == ("pat_rd", 1, 1, 1, False)


def test_slurm_positional_partition_and_lazyllm_order() -> None:
    """LazyLLM: slurm(partition, nnode, nproc, ngpus, timeout)."""
    launcher = launchers.slurm("pat_rd", 2, 4, 8, 30)
    r = launcher.resources
    assert (r.partition, r.nnodes, r.ntasks_per_node, r.ngpus, r.time) == ("pat_rd", 2, 4, 8, "30")


def test_slurm_ngpus_none_and_timeout() -> None:
    r = launchers.slurm(partition="p", ngpus=None, timeout=120).resources
    assert r.ngpus == 0 and r.time == "120"


def test_empty_with_lazyllm_keywords() -> None:
    launcher = launchers.empty(subprocess=True, ngpus=None, sync=False)
    assert isinstance(launcher, launchers.LocalLauncher) and launcher.sync is False and launcher.ngpus == 1


def test_remote_with_lazyllm_keywords_runs_locally_without_slurm(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """docs/lazyllm-skill finetune_example.md: launchers.remote(nnode=1, nproc=1, ngpus=4)."""
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch here
    launcher = launchers.remote(nnode=1, nproc=1, ngpus=4, timeout=60)
    assert isinstance(launcher, launchers.LocalLauncher) and launcher.nproc == 1
    assert "ignoring time" in capsys.readouterr().err


@pytest.mark.parametrize("call, match", [
    (lambda: launchers.slurm(partiton="p"), "did you mean 'partition'"),
    (lambda: launchers.local(ngpu=2), "did you mean 'ngpus'"),
    (lambda: launchers.remote(nnodes=1, nnode=1), "both given"),
    (lambda: launchers.local(nnode=2), "one node"),
    (lambda: launchers.local(timeout=60), "no time limit"),
    (lambda: launchers.local(2), "keywords only"),
    (lambda: launchers.slurm("p", 1, 1, 1, 1, 1), "at most 5 positional"),
    (lambda: launchers.sco(partition="pat_rd", nnode=1, nproc=1, ngpus=1), "SenseCore.*not supported"),
    (lambda: launchers.k8s(namespace="lazyllm"), "Kubernetes.*not supported"),
])  # fmt: skip
def test_refused_with_a_reason(call, match: str) -> None:
    with pytest.raises(LauncherArgumentError, match=match):
        call()


def test_uncalled_launcher_is_called(tiny_folder_model: Path, tmp_path: Path) -> None:
    """LazyLLM passes launcher=launchers.empty (the class) in its tests."""
    trainer = finetune.dummy(tiny_folder_model, tmp_path / "o", launcher=launchers.empty)
    assert isinstance(trainer.launcher, launchers.LocalLauncher)


def test_launcher_as_third_positional_argument(tiny_folder_model: Path, tmp_path: Path) -> None:
    """LazyLLM's FlagembeddingFinetune(base_model, target_path, launcher=...); for the others a launcher object in
    the merge_path slot is taken as the launcher (never as a path)."""
    embed = tmp_path / "bge-small-embed"
    embed.mkdir()
    (embed / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    local = launchers.local(stream=False)
    fe = finetune.flagembedding(embed, tmp_path / "fe", local)
    assert fe.launcher is local and fe.target.merge == tmp_path / "fe" / "lazyllm_merge"
    with pytest.raises(ConfigError, match="third positional argument of finetune.flagembedding is the launcher"):
        finetune.flagembedding(embed, tmp_path / "fe2", str(tmp_path / "merged"))
    al = finetune.alpacalora(tiny_folder_model, tmp_path / "al", local)
    assert al.launcher is local and al.target.merge == tmp_path / "al" / "lazyllm_merge"


def _lazyllm_launcher(kind: str, **attrs: object) -> object:
    """An object shaped like LazyLLM's launcher `kind` (lazyllm/launcher/base.py, slurm.py), without LazyLLM."""
    cls = type(kind, (), {"__module__": "lazyllm.launcher.base"})
    obj = cls()
    obj.__dict__.update(attrs)
    return obj


def test_lazyllm_launcher_objects_become_lazytunes(tiny_folder_model: Path, tmp_path: Path) -> None:
    """What TrainableModule passes a finetune class (tests/test_lazyllm_client.py does it with LazyLLM itself)."""
    empty = _lazyllm_launcher("EmptyLauncher", subprocess=False, sync=False, ngpus=None)
    trainer = finetune.dummy(tiny_folder_model, tmp_path / "a", launcher=empty)
    assert isinstance(trainer.launcher, launchers.LocalLauncher) and trainer.launcher.sync  # always waits
    slurm = _lazyllm_launcher("SlurmLauncher", partition="pat_rd", nnode=2, nproc=4, ngpus=4, timeout=60, sync=False)
    r = finetune.dummy(tiny_folder_model, tmp_path / "b", launcher=slurm).launcher.resources
    assert (r.partition, r.nnodes, r.ntasks_per_node, r.ngpus, r.time) == ("pat_rd", 2, 4, 4, "60")
    with pytest.raises(ConfigError, match="ScoLauncher has no lazytune equivalent"):
        finetune.dummy(tiny_folder_model, tmp_path / "c", launcher=_lazyllm_launcher("ScoLauncher"))


def test_by_name_is_the_one_resolver_and_takes_lazyllm_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    """launchers.slurm / local / remote are by_name under a fixed name: LazyLLM's forms work through it too."""
    r = launchers.by_name("slurm", "pat_rd", 2, nproc=4, timeout=30).resources
    assert (r.partition, r.nnodes, r.ntasks_per_node, r.time) == ("pat_rd", 2, 4, "30")
    assert isinstance(launchers.by_name("empty", subprocess=True, ngpus=None), launchers.LocalLauncher)
    with pytest.raises(LauncherArgumentError, match="SenseCore"):
        launchers.by_name("sco")
    monkeypatch.setenv("PATH", "/nonexistent")  # no sbatch here
    assert isinstance(launchers.remote("local"), launchers.LocalLauncher)  # a launcher name, not a partition
    assert isinstance(launchers.by_name("remote", "pat_rd", nnode=1), launchers.LocalLauncher)
