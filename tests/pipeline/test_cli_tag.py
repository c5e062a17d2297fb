"""`mlops tag`: a notebook someone already has gets the contract's tags and cells, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlops_cli.main import main
from mlops_core.notebook_contract import check_notebook, read_notebook

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
WINE = CORPUS / "wine_random_forest" / "wine_random_forest.ipynb"  # nbformat 4.0, no cell ids
COLAB = CORPUS / "digits_colab" / "Digits_SVM.ipynb"  # Colab: 2-space indent, its own key order


def test_only_tags_and_the_contracts_cells_are_added(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "wine.ipynb"
    arguments = ["--model-name", "wine-rf", "--data", "2-4", "--preprocessing", "10"]
    arguments += ["--training", "11", "--evaluation", "12-13", "--metric", "accuracy=acc"]
    assert main(["tag", str(WINE), *arguments, "--export", "rfc", "-o", str(out)]) == 0
    assert ": ok: model wine-rf version 1, 10 tagged cells will run" in capsys.readouterr().out

    before, after = json.loads(WINE.read_text()), json.loads(out.read_text())
    assert after["nbformat_minor"] == 0 and after["metadata"] == before["metadata"]
    added = {0, 14, 15}  # config first; metric and export right after the last tagged cell
    assert ["".join(after["cells"][i]["source"]) for i in sorted(added)] == [
        'MODEL_NAME = "wine-rf"\nVERSION = "1"',
        "import mlflow\n\nmlflow.log_metric('accuracy', acc)",
        "import joblib\n\njoblib.dump(rfc, MODEL_OUTPUT_PATH)",
    ]
    kept = [cell for i, cell in enumerate(after["cells"]) if i not in added]
    for number, (old, new) in enumerate(zip(before["cells"], kept, strict=True), start=1):
        tags = new["metadata"].pop("tags", None)
        assert new == old  # source, outputs, metadata: as they were
        assert (tags is not None) == (number in {2, 3, 4, 10, 11, 12, 13})
    assert all("id" not in cell for cell in after["cells"])  # nbformat 4.0 has no cell ids
    contract = check_notebook(read_notebook(out.read_text()), default_threshold=0.8)
    assert [i + 1 for i in contract.run_cells] == [1, 3, 4, 5, 11, 12, 13, 14, 15, 16]


def test_a_colab_file_keeps_its_layout_and_a_gate_is_written_as_literals(tmp_path: Path) -> None:
    out = tmp_path / "digits.ipynb"
    arguments = ["--model-name", "digits", "--version", "2.0", "--data", "4-5"]
    arguments += ["--preprocessing", "7", "--training", "8", "--gate", "f1_macro>=0.9"]
    assert main(["tag", str(COLAB), *arguments, "--export", "clf", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith('{\n  "nbformat": 4,\n  "nbformat_minor": 0,')
    assert text.endswith("}\n")
    contract = check_notebook(read_notebook(text), default_threshold=0.8)
    assert contract.version == "2.0"
    assert contract.gate.as_dict() == {"metric": "f1_macro", "threshold": 0.9, "direction": "max"}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "1"], "mlops:data: cell 1 is a markdown cell; only code cells run"),
        (["--training", "40"], "mlops:training: there is no cell 40 (the notebook has 13)"),
        (["--training", "8-5"], "the range 8-5 runs backwards"),
        (["--export", "clf("], "--export: 'clf(' is not a Python expression"),
        (["--metric", "accuracy"], "expected NAME=EXPRESSION"),
        (["--gate", "accuracy>0.9"], "expected METRIC>=THRESHOLD or METRIC<=THRESHOLD"),
    ],
)
def test_bad_arguments_are_named_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    out = tmp_path / "out.ipynb"
    code = main(["tag", str(COLAB), "--model-name", "m", *arguments, "-o", str(out)])
    assert code == 64 and message in capsys.readouterr().err
    assert not out.exists()


def test_a_notebook_with_a_config_cell_keeps_it(tmp_path: Path) -> None:
    """Tagging twice, or a notebook that has its config cell, adds no second config cell."""
    once = tmp_path / "once.ipynb"
    assert main(["tag", str(COLAB), "--model-name", "digits", "-o", str(once)]) == 1
    assert main(["tag", str(once), "--model-name", "again"]) == 64
    assert main(["tag", str(once), "--training", "9"]) == 1  # still no export: check says so
    cells = json.loads(once.read_text())["cells"]
    assert [c["metadata"].get("tags") for c in cells].count(["mlops:config"]) == 1
    assert cells[8]["metadata"]["tags"] == ["mlops:training"]
