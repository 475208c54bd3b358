"""Published NYU Depth V2 results, as context beside the course's tables — never as a comparison:
a rooms δ1 and an NYU δ1 measure different things. What papers report on NYU's 654 test images
(Eigen crop, 10 m cap as the course's protocol; Eigen et al. 2014 predates the cap), as sourced.
"""

from __future__ import annotations

__all__ = ["PUBLISHED_NYU", "published_table"]

PUBLISHED_NYU = (
    {"method": "Eigen et al. 2014 (coarse + fine)", "delta1": 0.611, "abs_rel": 0.215,
     "rmse": 0.907, "source": "arXiv 1406.2283, Table 1"},
    {"method": "BTS, DenseNet-161", "delta1": 0.885, "abs_rel": 0.110, "rmse": 0.392,
     "source": "github.com/cleinc/bts README, model zoo"},
    {"method": "AdaBins, EfficientNet-B5", "delta1": 0.903, "abs_rel": 0.103, "rmse": 0.364,
     "source": "arXiv 2011.14141, Table 2"},
    {"method": "BinsFormer, Swin-L", "delta1": 0.925, "abs_rel": 0.094, "rmse": 0.330,
     "source": "Monocular-Depth-Estimation-Toolbox, configs/binsformer README"},
    {"method": "NeWCRFs, Swin-L", "delta1": 0.922, "abs_rel": 0.095, "rmse": 0.334,
     "source": "arXiv 2203.01502, Table 3"},
    {"method": "Depth Anything V1, ViT-L (fine-tuned)", "delta1": 0.984, "abs_rel": 0.056,
     "rmse": 0.206, "source": "arXiv 2401.10891, Table 3"},
)  # fmt: skip


def published_table() -> str:
    """Markdown: the published NYU rows with their sources, and the warning they come with."""
    lines = [
        "| published on NYU Depth V2 (not the rooms set) | δ1 ↑ | AbsRel ↓ | RMSE (m) ↓ | source |",
        "|---|---|---|---|---|",
    ]
    for r in PUBLISHED_NYU:
        lines.append(
            f"| {r['method']} | {r['delta1']:.3f} | {r['abs_rel']:.3f} | {r['rmse']:.3f} | "
            f"{r['source']} |"
        )
    return "\n".join(lines) + (
        "\n\nContext only: these models were trained and tested on real NYU images (BTS and later on"
        " ~24k training pairs); the course's numbers are on procedural rooms, with other depths,"
        " scenes and cameras, so the two columns are not comparable."
    )
