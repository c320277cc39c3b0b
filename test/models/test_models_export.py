"""Export of the input-fused TransPoseNet: torch.export and TorchScript match eager mode on CPU; the CLI works."""

from __future__ import annotations

import pytest
import torch

from mfapr_ros.core.checkpoint import save_checkpoint
from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.preprocess import PreprocessConfig
from mfapr_ros.core.rig import ring_rig
from mfapr_ros.models import build_model, model_meta, preset
from mfapr_ros.models.export import export_program, main, run_program, verify_export

torch.set_num_threads(1)


@pytest.mark.parametrize("fmt", ["torch-export", "torchscript"])
@pytest.mark.parametrize("name", ["tiny", "tiny_tile", "demo"])
def test_export_matches_eager(fmt, name):
    torch.manual_seed(0)
    model = build_model(preset(name, predict_variance=True)).eval()
    program = export_program(model, fmt, batch=2)
    diffs = verify_export(model, program, fmt, batch=2, atol=1e-5)
    assert set(diffs) == {"t", "q", "log_var"} and max(diffs.values()) <= 1e-5
    if fmt == "torch-export":  # dynamic batch: another batch size runs and still matches
        diffs3 = verify_export(model, program, fmt, batch=3, atol=1e-5)
        assert max(diffs3.values()) <= 1e-5
    # the exported graph honours the mask: a missing camera's pixels do not change its output
    x = torch.randn(2, 4, 3, 64, 64)
    m = torch.tensor([[True, False, True, True]] * 2)
    y = x.clone()
    y[:, 1] = 7.0
    a, b = run_program(program, fmt, x, m), run_program(program, fmt, y, m)
    torch.testing.assert_close(a[0], b[0], atol=1e-6, rtol=0)


def test_verify_export_detects_mismatch():
    import copy

    model = build_model(preset("tiny")).eval()
    program = export_program(copy.deepcopy(model), "torchscript")
    with torch.no_grad():
        model.net.head.fc_t.bias.add_(1.0)  # eager model changes after export
    with pytest.raises(Exception, match="does not match eager"):
        verify_export(model, program, "torchscript")


def test_export_cli(tmp_path, capsys):
    model = build_model(preset("tiny")).eval()
    ck = save_checkpoint(tmp_path / "m", model, model_meta(model, ring_rig(4), PreprocessConfig(64, 64)))
    assert main(["--checkpoint", str(ck), "--out", str(tmp_path / "m"), "--format", "torch-export"]) == 0
    assert (tmp_path / "m.pt2").exists()
    assert "max abs diff" in capsys.readouterr().out
    ep = torch.export.load(str(tmp_path / "m.pt2"))
    x, mk = torch.randn(1, 4, 3, 64, 64), torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        ref = model(x, mk)
    t, q = ep.module()(x, mk)
    torch.testing.assert_close(t, ref["t"], atol=1e-5, rtol=0)
    torch.testing.assert_close(q, ref["q"], atol=1e-5, rtol=0)


def test_onnx_without_package_is_a_clear_error():
    pytest.importorskip("torch")
    try:
        import onnx  # noqa: F401
        pytest.skip("onnx is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="pip install onnx"):
        export_program(build_model(preset("tiny")), "onnx")
