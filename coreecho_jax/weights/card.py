"""The model card (``README.md``) of a weights folder: what the weights are, how they were measured, what
they are for and not for, their licence and what to cite.

:func:`render` writes it from the folder's ``config.json`` and the facts of its source (:class:`Source`,
which :mod:`coreecho_jax.weights.export` gathers). The front matter is the Hugging Face Hub's model card
metadata (``license``, ``library_name``, ``tags``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: Where the licences below were read (2026-12): the official CoReEcho repository's ``LICENSE`` file
#: (Creative Commons Attribution-NonCommercial 4.0 International) and Sense-X/UniFormer's ``LICENSE``
#: (MIT, Copyright (c) 2022 SenseTime X-Lab).
COREECHO_LICENCE = (
    "CC BY-NC 4.0 (Creative Commons Attribution-NonCommercial 4.0 International), the licence of the "
    "official CoReEcho repository (github.com/BioMedIA-MBZUAI/CoReEcho, file LICENSE); converted weights "
    "stay under it: non-commercial use, with attribution."
)
UNIFORMER_LICENCE = (
    "MIT, the licence of the UniFormer repository (github.com/Sense-X/UniFormer, file LICENSE, Copyright "
    "(c) 2022 SenseTime X-Lab), which releases the Kinetics-400 checkpoints (Hugging Face Hub: "
    "Sense-X/uniformer_video). Kinetics-400 itself is a list of YouTube videos under their own terms."
)
RUN_LICENCE = (
    "Set by whoever trained these weights. Weights trained on EchoNet-Dynamic are bound by its Stanford "
    "research use agreement (non-commercial research; read its terms before sharing them); weights "
    "trained from the Kinetics-400 UniFormer also carry its MIT notice; the coreecho-jax code that "
    "wrote them is Apache-2.0."
)

INTENDED_USE = """\
Research only: measuring left-ventricular ejection fraction (EF, %) from apical four-chamber
echocardiography videos in studies, method comparisons and teaching. **Not a medical device**: not
cleared or approved by any regulator, not validated for clinical use; it must not inform the diagnosis
or treatment of a patient."""

LIMITATIONS = """\
* Trained and tested on the data named above only; other views than apical four-chamber, other
  scanners, children, contrast or colour-Doppler loops and other populations are out of its
  distribution, and its error there is unknown. The shift score (`shift_percentile`, from a run's
  training embeddings) is a heuristic, not a guarantee; a weights folder carries no training
  embeddings, so predictions from it have none.
* A video is prepared as in training (see `config.json`): cropped to the ultrasound region or
  sector, made square, 112 x 112 px, then resized to `data.image_size`; K clips of `data.frames`
  frames at stride `data.stride`, spread evenly; EF is the mean of the K clip predictions. A frame
  rate far from the training data's (~50 fps) changes the time a clip spans; the result flags it.
* EF intervals hold their level only for videos exchangeable with the calibration videos (same
  population, model and clip protocol); the calibration's bins say how many videos back each one."""

CITATION = """\
```bibtex
@inproceedings{maani2024coreecho,
  title     = {CoReEcho: Continuous Representation Learning for 2D+time Echocardiography Analysis},
  author    = {Maani, Fadillah Adamsyah and Saeed, Numan and Matsun, Aleksandr and Yaqub, Mohammad},
  booktitle = {Medical Image Computing and Computer Assisted Intervention (MICCAI 2024)},
  year      = {2024},
  note      = {arXiv:2403.10164}
}
@inproceedings{li2022uniformer,
  title     = {UniFormer: Unified Transformer for Efficient Spatial-Temporal Representation Learning},
  author    = {Li, Kunchang and Wang, Yali and Gao, Peng and Song, Guanglu and Liu, Yu and Li, Hongsheng
               and Qiao, Yu},
  booktitle = {International Conference on Learning Representations (ICLR 2022)},
  year      = {2022}
}
```
EchoNet-Dynamic (Ouyang et al., Nature 2020) for weights trained on it; coreecho-jax as software
(its CITATION.cff)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """What a folder was exported from, in the words of its card.

    Attributes:
        title: the card's heading.
        kind: ``"run"``, ``"pth"`` (a CoReEcho ``best.pth``) or ``"encoder"`` (a UniFormer without head).
        origin: what was loaded, in a line (checkpoint and epoch, or the file).
        training_data: a paragraph.
        metrics: a Markdown section body (split, date, numbers), or why there are none.
        calibration: whether ``calibration.json`` is included, and why not.
        licence: a paragraph; ``licence_id``: the Hub's identifier (``cc-by-nc-4.0``, ``mit``, ``other``).
    """

    title: str
    kind: str
    origin: str
    training_data: str
    metrics: str
    calibration: str
    licence: str
    licence_id: str


def _model_lines(config: dict[str, Any]) -> list[str]:
    model, data, k = config["model"], config["data"], config["eval"].get("n_clips")
    head = "with its EF regression head" if config["has_head"] else "**without** an EF head (encoder only)"
    return [
        f"* UniFormer video encoder, depth {model['depth']}, widths {model['dims']}, head width "
        f"{model['head_dim']}, {head}.",
        f"* Clips: {data.get('frames')} frames at stride {data.get('stride')}, {data.get('image_size')} px, "
        f"{'RGB' if data.get('channels', 3) == 3 else 'grey'}; {k} clips per video.",
        f"* Weights SHA-256 (what a `calibration.json` names): `{config['weights_sha256']}`.",
    ]


def render(config: dict[str, Any], source: Source, exported: str) -> str:
    """The card's Markdown: front matter, then the sections (``exported``: the export date, UTC)."""
    use = INTENDED_USE
    call = 'print(m.predict("echo.dcm").summary)' if config["has_head"] else 'e = m.embed("echo.dcm")'
    if not config["has_head"]:
        use += (
            "\n\nThese weights hold an encoder without a trained EF head: they cannot predict EF "
            "(`predict` refuses them). Use them for embeddings (`m.embed(...)`) or as the start of training."
        )
    sections = [
        "---",
        f"license: {source.licence_id}",
        "library_name: coreecho-jax",
        "tags: [echocardiography, ejection-fraction, video, jax, flax]",
        "---",
        "",
        f"# {source.title}",
        "",
        f"Exported by coreecho-jax on {exported} from {source.origin}.",
        "",
        "## Model",
        "",
        *_model_lines(config),
        "",
        "```python",
        "import coreecho_jax",
        'm = coreecho_jax.from_pretrained("path/to/this/folder")',
        call,
        "```",
        "",
        "## Training data",
        "",
        source.training_data,
        "",
        "## Metrics",
        "",
        source.metrics,
        "",
        "## EF intervals",
        "",
        source.calibration,
        "",
        "## Intended use",
        "",
        use,
        "",
        "## Limitations",
        "",
        LIMITATIONS,
        "",
        "## Licence",
        "",
        source.licence,
        "",
        "## Citation",
        "",
        CITATION,
        "",
    ]
    return "\n".join(sections)
