"""The compiled loops where numba cannot cache them on disk (a read-only install whose user
has no writable home): compiled in the process instead, with a warning, not an error."""

import os
import subprocess
import sys

import numba
import pytest

from anyseg import _loops

needs_locator_setting = pytest.mark.skipif(
    not hasattr(numba.config, "CACHE_LOCATOR_CLASSES"), reason="this numba cannot be told which cache folders to try")


@needs_locator_setting
def test_no_cache_folder_is_a_warning(monkeypatch):
    # the zip locator serves only files inside zip archives: no folder is left to cache in
    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "ZipCacheLocator")
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        assert _loops._disk_cache() is False
    monkeypatch.undo()
    assert _loops._disk_cache() is True


@needs_locator_setting
def test_loops_run_without_a_cache_folder():
    code = ("import torch\nfrom anyseg import kernels\n"
            "x = torch.randn(3, 5, 64).bfloat16()\nnorm = torch.nn.LayerNorm(64)\n"
            "torch.testing.assert_close(kernels.layer_norm(x, norm), norm(x.float()).bfloat16(), atol=0.02, rtol=0.01)\n")
    env = dict(os.environ, NUMBA_CACHE_LOCATOR_CLASSES="ZipCacheLocator")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "compiled again in each process" in run.stderr


def test_warmup_without_a_cache_folder_says_what_to_set(monkeypatch, capsys):
    from anyseg.cli import main

    monkeypatch.setattr(_loops, "_DISK_CACHE", False)
    assert main(["warmup"]) == 2
    assert "set NUMBA_CACHE_DIR" in capsys.readouterr().err
