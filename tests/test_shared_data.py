"""Where the tests find the real data samples, and what happens when they are not there."""

import os
import subprocess
import sys

import fixtures_tasks as fx


def test_samples_are_found_beside_the_repository_or_where_the_variable_says(monkeypatch,
                                                                            tmp_path):
  monkeypatch.delenv(fx.SHARED_DATA_VARIABLE, raising=False)
  assert fx.shared_data_root() == fx.REPO.parent / "shared" / "data"
  monkeypatch.setenv(fx.SHARED_DATA_VARIABLE, str(tmp_path))
  assert fx.shared_data_root() == tmp_path


def test_a_variable_naming_no_folder_stops_the_session(tmp_path):
  env = dict(os.environ, **{fx.SHARED_DATA_VARIABLE: str(tmp_path / "nowhere")})
  result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only",
                           "tests/test_shared_data.py"], cwd=fx.REPO, env=env,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 4  # pytest's usage error
  assert f"HYPERT5_SHARED_DATA={tmp_path / 'nowhere'}: no such folder" in result.stderr
