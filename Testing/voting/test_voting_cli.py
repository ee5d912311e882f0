"""``samba segment --refine`` and ``samba evaluate --refine`` end to end on a real validation case."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from SAMBASegmentLib.cli import _fuse_automatic_path_by_default, _whole_tumour_network, build_parser, main
from SAMBASegmentLib.errors import SambaError
from SAMBASegmentLib.labels import region_mask
from SAMBASegmentLib.metrics import dice
from SAMBASegmentLib.simulation import box3d_prompt
from SAMBASegmentLib.volumes import load_case, same_geometry


def test_segment_refine_writes_three_classes_and_the_agreement_map(tmp_path, validation_case, data_dir):
    truth = region_mask(validation_case.label, "WT")
    prompt = box3d_prompt(truth, 0)
    (_, j0, i0), (_, j1, i1) = prompt.box.lo, prompt.box.hi
    k0, k1 = prompt.seed_index - 2, prompt.seed_index + 2  # five slices keep the test short
    output = tmp_path / "classes.nii.gz"
    code = main(["segment", str(data_dir / validation_case.name), "--box", *map(str, (i0, j0, k0, i1, j1, k1)),
                 "--refine", "--label-format", "brats2021", "--views", "1", "--output", str(output), "--no-adapter"])
    assert code == 0
    written = sitk.ReadImage(str(output))
    agreement = sitk.ReadImage(str(tmp_path / "classes_agreement.nii.gz"))
    assert same_geometry(written, validation_case.reference) and same_geometry(agreement, validation_case.reference)
    label = sitk.GetArrayFromImage(written)
    assert set(np.unique(label)) == {0, 1, 2, 4}  # BraTS 2021 values: the tumour's three classes were found
    fractions = sitk.GetArrayFromImage(agreement)
    assert set(np.round(np.unique(fractions), 3)) <= {0.0, 0.25, 0.5, 0.75, 1.0} and fractions.max() == 1.0
    assert not fractions[: k0].any() and not fractions[k1 + 1:].any()  # SAM stayed inside the box's slices


def test_evaluate_refine_reports_three_regions(tmp_path, validation_case, slab_case):
    report = tmp_path / "refined.json"
    code = main(["evaluate", str(slab_case(validation_case.name)), "--prompt", "box3d", "--refine", "rule",
                 "--views", "1", "--json", str(report), "--no-adapter"])
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


def test_automatic_segment_fuses_every_modality_into_three_classes(tmp_path, validation_case, slab_case, capsys):
    """``samba segment --prompt auto`` as it ships: detector → SAM on each modality → the voting network's NETC, SNFH
    and ET, on an axial slab of a validation case."""
    folder = slab_case(validation_case.name)
    output = tmp_path / "auto.nii.gz"
    assert main(["segment", str(folder), "--prompt", "auto", "--views", "1", "--output", str(output),
                 "--no-adapter"]) == 0
    assert "voting network" in capsys.readouterr().err
    written = sitk.ReadImage(str(output))
    slab = load_case(folder)
    assert same_geometry(written, slab.reference)
    label = sitk.GetArrayFromImage(written)
    assert set(np.unique(label)) == {0, 1, 2, 3}  # the three classes, as the engine numbers them by default
    for region, minimum in (("WT", 0.8), ("TC", 0.5), ("ET", 0.4)):
        assert dice(region_mask(label, region), region_mask(slab.label, region)) > minimum, region


def test_whole_tumour_network_and_refine_exclude_each_other(capsys, validation_case, data_dir):
    code = main(["evaluate", str(data_dir / validation_case.name), "--prompt", "box3d", "--refine",
                 "--whole-tumour", "network"])
    assert code == 2
    assert "--whole-tumour applies without --refine" in capsys.readouterr().err


def test_the_automatic_path_fuses_every_modality_unless_one_modality_is_asked_for(data_dir, validation_case):
    """``--prompt auto`` means ``--refine`` unless ``--whole-tumour`` names a single-modality whole tumour; a box
    keeps SAM's mask; ``--whole-tumour`` beside ``--refine`` is refused."""
    case = str(data_dir / validation_case.name)
    box = ["--box", "1", "1", "1", "9", "9", "9"]
    expected = {("segment", case, "--prompt", "auto", "--output", "x.nii.gz"): "network",
                ("evaluate", case, "--prompt", "auto"): "network",
                ("evaluate", case, "--prompt", "auto", "--refine", "rule"): "rule",
                ("evaluate", case, "--prompt", "auto", "--whole-tumour", "network"): None,
                ("evaluate", case, "--prompt", "auto", "--whole-tumour", "sam"): None,
                ("segment", case, *box, "--output", "x.nii.gz"): None,
                ("evaluate", case, "--prompt", "box3d"): None}
    for command, refine in expected.items():
        args = build_parser().parse_args(list(command))
        _fuse_automatic_path_by_default(args)
        assert args.refine == refine, command
        if refine is not None:
            assert _whole_tumour_network(args) is None  # the fusion's WT, not one modality's redrawing
    args = build_parser().parse_args(["evaluate", case, "--prompt", "auto", "--refine", "--whole-tumour", "sam"])
    with pytest.raises(SambaError, match="--whole-tumour applies without --refine"):
        _whole_tumour_network(args)


def test_automatic_clicks_are_refused_with_a_clear_message(capsys, validation_case, data_dir):
    assert main(["evaluate", str(data_dir / validation_case.name), "--prompt", "auto", "--clicks", "1"]) == 2
    assert "simulates no corrective clicks" in capsys.readouterr().err
