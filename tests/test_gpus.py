"""nvidia-smi parsing and GPU choice, on recorded outputs (no GPU on CI machines)."""

from __future__ import annotations

import pytest

from launchers import gpus

# Recorded from real machines (uuids shortened).
EIGHT_H100 = """\
0, GPU-1a2b3c4d-0000-0000-0000-000000000000, NVIDIA H100 80GB HBM3, 81559, 70000, 11559
1, GPU-1a2b3c4d-0000-0000-0000-000000000001, NVIDIA H100 80GB HBM3, 81559, 4, 81555
2, GPU-1a2b3c4d-0000-0000-0000-000000000002, NVIDIA H100 80GB HBM3, 81559, 40000, 41559
3, GPU-1a2b3c4d-0000-0000-0000-000000000003, NVIDIA H100 80GB HBM3, 81559, 4, 81555
4, GPU-1a2b3c4d-0000-0000-0000-000000000004, NVIDIA H100 80GB HBM3, 81559, 81000, 559
5, GPU-1a2b3c4d-0000-0000-0000-000000000005, NVIDIA H100 80GB HBM3, 81559, 4, 81555
6, GPU-1a2b3c4d-0000-0000-0000-000000000006, NVIDIA H100 80GB HBM3, 81559, 10, 81549
7, GPU-1a2b3c4d-0000-0000-0000-000000000007, NVIDIA H100 80GB HBM3, 81559, 4, 81555
"""
ODD_NAME = "0, GPU-aaaa, NVIDIA RTX A6000, Ada, 49140, [N/A], [N/A]\n"


def test_parse_eight() -> None:
    parsed = gpus.parse_nvidia_smi(EIGHT_H100)
    assert len(parsed) == 8
    assert parsed[4].memory_free_mib == 559 and parsed[0].name == "NVIDIA H100 80GB HBM3"
    assert parsed[0].memory_total_gb == pytest.approx(79.6, abs=0.1)


def test_parse_name_with_comma_and_na() -> None:
    (g,) = gpus.parse_nvidia_smi(ODD_NAME)
    assert g.name == "NVIDIA RTX A6000, Ada" and g.memory_free_mib == 0


def test_parse_garbage_raises() -> None:
    with pytest.raises(ValueError):
        gpus.parse_nvidia_smi("No devices were found\n")


def test_pick_most_free() -> None:
    parsed = gpus.parse_nvidia_smi(EIGHT_H100)
    assert [g.index for g in gpus.pick(parsed, 3)] == [1, 3, 5]
    with pytest.raises(RuntimeError, match="asked for 9"):
        gpus.pick(parsed, 9)


@pytest.mark.parametrize(
    ("cvd", "expected"),
    [
        (None, list(range(8))),
        ("", []),
        ("3,1", [3, 1]),
        ("2,99,3", [2]),  # like CUDA: stops at the first invalid entry
        ("GPU-1a2b3c4d-0000-0000-0000-000000000005", [5]),
        ("1a2b3c4d-0000-0000-0000-000000000006,GPU-1a2b3c4d-0000-0000-0000-000000000007", [6, 7]),
        ("GPU-1a2b", []),  # ambiguous prefix matches nothing
    ],
)
def test_cuda_visible_devices(cvd: str | None, expected: list[int]) -> None:
    parsed = gpus.parse_nvidia_smi(EIGHT_H100)
    assert [g.index for g in gpus.visible(parsed, cvd)] == expected


def test_cuda_visible_value_keeps_form() -> None:
    parsed = gpus.parse_nvidia_smi(EIGHT_H100)
    chosen = gpus.pick(gpus.visible(parsed, "GPU-1a2b3c4d-0000-0000-0000-000000000001,3"), 1)
    assert gpus.cuda_visible_value(chosen, "GPU-1a2b3c4d-0000-0000-0000-000000000001,3").startswith("GPU-")
    assert gpus.cuda_visible_value(chosen, "1,3") == "1"


def test_local_launcher_sets_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import sys

    import launchers

    monkeypatch.setattr(gpus, "query_nvidia_smi", lambda timeout=20: gpus.parse_nvidia_smi(EIGHT_H100))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,4,6,7")
    launcher = launchers.local(ngpus=2, stream=False)
    topo = launcher.topology()
    assert topo.gpus_per_node == 2 and topo.nproc_per_node == 2 and topo.gpu_name.startswith("NVIDIA H100")
    log = tmp_path / "env.log"
    code = "import os; print('CVD=' + os.environ['CUDA_VISIBLE_DEVICES'])"
    launcher.run([launchers.Step("env", [sys.executable, "-c", code], log=log)], "gpu-env")
    assert "CVD=6,7" in log.read_text()
