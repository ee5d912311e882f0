"""``samba segment --refine`` and ``samba evaluate --refine`` end to end on a real validation case."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from SAMBASegmentLib.cli import _whole_tumour_network, build_parser, main
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.simulation import box3d_prompt
from SAMBASegmentLib.volumes import same_geometry


def test_segment_refine_writes_three_classes_and_the_agreement_map(tmp_path, validation_case, data_dir):
    truth = region_mask(validation_case.label, "WT")
    prompt = box3d_prompt(truth, 0)
    (_, j0, i0), (_, j1, i1) = prompt.box.lo, prompt.box.hi
    k0, k1 = prompt.seed_index - 2, prompt.seed_index + 2  # five slices keep the test short
    output = tmp_path / "classes.nii.gz"
    code = main(["segment", str(data_dir / validation_case.name), "--box", *map(str, (i0, j0, k0, i1, j1, k1)),
                 "--refine", "--label-format", "brats2021", "--output", str(output), "--no-adapter"])
    assert code == 0
    written = sitk.ReadImage(str(output))
    agreement = sitk.ReadImage(str(tmp_path / "classes_agreement.nii.gz"))
    assert same_geometry(written, validation_case.reference) and same_geometry(agreement, validation_case.reference)
    label = sitk.GetArrayFromImage(written)
    assert set(np.unique(label)) == {0, 1, 2, 4}  # BraTS 2021 values: the tumour's three classes were found
    fractions = sitk.GetArrayFromImage(agreement)
    assert set(np.round(np.unique(fractions), 3)) <= {0.0, 0.25, 0.5, 0.75, 1.0} and fractions.max() == 1.0
    assert not fractions[: k0].any() and not fractions[k1 + 1:].any()  # SAM stayed inside the box's slices


def test_evaluate_refine_reports_three_regions(tmp_path, validation_case, data_dir):
    report = tmp_path / "refined.json"
    code = main(["evaluate", str(data_dir / validation_case.name), "--prompt", "box3d", "--refine", "rule",
                 "--json", str(report), "--no-adapter"])
    assert code == 0
    result = json.loads(report.read_text())
    row = result["cases"][0]
    assert result["refine"] == "rule" and row["modality"] == "flair+t1+t1ce+t2"
    for region in ("ET", "TC", "WT"):
        assert 0.3 < row[region]["dice"] <= 1.0 and row[region]["hd95"] >= 0
        assert 0 <= row[region]["lesion_dice"] <= 1


def test_refine_refuses_clicks(capsys, validation_case, data_dir):
    code = main(["evaluate", str(data_dir / validation_case.name), "--prompt", "box3d", "--refine", "--clicks", "2",
                 "--no-adapter"])
    assert code == 2
    assert "simulates no clicks" in capsys.readouterr().err


def test_automatic_segment_reports_the_networks_whole_tumour(tmp_path, validation_case, data_dir, capsys):
    """``samba segment --prompt auto``: detector → SAM on FLAIR → the voting network redraws the whole tumour."""
    output = tmp_path / "auto.nii.gz"
    assert main(["segment", str(data_dir / validation_case.name), "--prompt", "auto", "--output", str(output),
                 "--no-adapter"]) == 0
    assert "voting network" in capsys.readouterr().err
    written = sitk.ReadImage(str(output))
    assert same_geometry(written, validation_case.reference)
    truth = region_mask(validation_case.label, "WT")
    assert dice(sitk.GetArrayFromImage(written) > 0, truth) > 0.8


def test_whole_tumour_network_and_refine_exclude_each_other(capsys, validation_case, data_dir):
    code = main(["evaluate", str(data_dir / validation_case.name), "--prompt", "box3d", "--refine",
                 "--whole-tumour", "network"])
    assert code == 2
    assert "--whole-tumour applies without --refine" in capsys.readouterr().err


def test_automatic_refine_keeps_the_fused_whole_tumour(data_dir, validation_case):
    """``--prompt auto --refine`` fuses every modality: no single-modality redrawing is asked for, nothing refused."""
    case = str(data_dir / validation_case.name)
    for command in (["segment", case, "--prompt", "auto", "--refine", "--output", "x.nii.gz"],
                    ["evaluate", case, "--prompt", "auto", "--refine"]):
        assert _whole_tumour_network(build_parser().parse_args(command), automatic=True) is None
