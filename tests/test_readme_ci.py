"""README's commands and .ci/run stay in step: CI runs exactly README's setup and test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _block_after(text: str, heading: str) -> list[str]:
    part = text.split(heading, 1)[1]
    block = re.search(r"```bash\n(.*?)```", part, re.S).group(1)
    return [line.strip() for line in block.strip().splitlines()]


def test_ci_runs_readme_setup_and_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    lines = _block_after(readme, "Run the tests:")
    assert lines[-1] == "python -m pytest -q"
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert ci_lines[-1] == lines[-1], "the last line of .ci/run must be README's test command"
    assert "pip install -q torch==2.13.0" in ci_lines and "pip install -q -e '.[dev]'" in ci_lines
    assert "pip install torch==2.13.0 && pip install -e '.[dev]'" in lines


def test_readme_main_job_is_the_cli():
    lines = _block_after((ROOT / "README.md").read_text(), "Set up and run the main job")
    assert lines[-1] == "python -m scoresde.run"
    assert "pip install torch==2.13.0 && pip install -e ." in lines
