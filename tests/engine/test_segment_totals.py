"""The run totals of `segment` (engine.model.batch_segment.segment_distributed): the counts an
`after` step returns are summed over ranks with zero counts kept. A Counter sum dropped a zero,
so a stack whose slices linked into no 3-D object made `segment` crash with KeyError 'objects'
after writing every item."""
from types import SimpleNamespace

from engine.model.batch_segment import segment_distributed
from engine.project import Project


def test_zero_counts_of_the_after_step_are_kept(tmp_path):
    proj = Project.create(tmp_path / "p", labels=["rock"])
    predictor = SimpleNamespace(label_names=["rock"], path="model.pt")
    res = segment_distributed(proj, predictor, [], key="k",
                              after=lambda done: {"objects": 0, "stacks": 1})
    assert res["total"]["after"] == {"objects": 0, "stacks": 1}
