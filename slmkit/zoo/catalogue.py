"""The survey's catalogue of small language models (Lu et al., "Small Language Models: Survey, Measurements, and
Insights", arXiv 2409.15790) as typed records, and the survey's on-phone measurements.

Source: the survey's data repository (UbiquitousLearning/TinyLLMLeaderBoard): SLM.json (68 SLMs + 4 Llama-7B
baselines, every value a string) and phone_latency.json (27 models x 4 phones, INT4 on llama.cpp). `build()`
cleans them into `slmkit/zoo/data/{catalogue,phones}.json`, which ship with the package; `scripts/build-zoo.py`
rebuilds them from ../shared/data/zoo and a test checks that the shipped files equal a rebuild.

Cleaning (written down where it is not obvious):
- parameters "1.3B" / "500M" -> numbers; release "2023.03" -> "2023-03"; context "128k" -> 131072 and
  "4096/128000" -> 4096 (the model's own window; the other is an extended variant);
- training tokens: the first number of "300B/207B Dataset" (tokens trained / dataset size), "3T" -> 3e12;
- FFN ratio "0" and "-" (OpenELM's layer-wise widths, DCLM's unstated one) -> None;
- activation: gelu_new and gelu_pytorch_tanh -> gelu_tanh (the same function);
- scores: commonsense reasoning and problem solving are fractions already; math (GSM8K accuracy in percent)
  is divided by 100 so that every score is a fraction; in-context learning is empty in every row -> None;
- the catalogue has no norm or FFN-gating column: both come from the architecture family (FAMILIES below, from
  each family's transformers config), and `derived` says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from slmkit.errors import SlmError

DATA = Path(__file__).with_name("data")

# hub-id pattern -> (architecture family as transformers names it, norm, gated FFN). First match wins.
FAMILIES: list[tuple[str, str, str, bool]] = [
    (r"^facebook/(opt|galactica)", "opt", "LayerNorm", False),
    (r"^bigscience/bloom", "bloom", "LayerNorm", False),
    (r"^(EleutherAI/pythia|databricks/dolly)", "gpt_neox", "LayerNorm", False),
    (r"^(cerebras/|MBZUAI/LaMini-GPT|openai-community/gpt2)", "gpt2", "LayerNorm", False),
    (r"^microsoft/phi-[12]", "phi", "LayerNorm", False),
    (r"^microsoft/Phi-3", "phi3", "RMSNorm", True),
    (r"^stabilityai/stablelm", "stablelm", "LayerNorm", True),
    (r"^Qwen/Qwen-", "qwen", "RMSNorm", True),  # Qwen v1: remote code
    (r"^Qwen/Qwen(1\.5|2)", "qwen2", "RMSNorm", True),
    (r"^MBZUAI/MobiLlama", "mobillama", "RMSNorm", True),  # one FFN shared by all layers: remote code
    (r"^(TinyLlama/|mtgv/MobileLLaMA|HuggingFaceTB/SmolLM|h2oai/h2o-danube3|tensoropera/Fox|meta-llama/)", "llama",
     "RMSNorm", True),
    (r"^h2oai/h2o-danube2", "mistral", "RMSNorm", True),
    (r"^google/gemma-2-", "gemma2", "RMSNorm", True),
    (r"^google/gemma-", "gemma", "RMSNorm", True),
    (r"^google/recurrentgemma", "recurrent_gemma", "RMSNorm", True),
    (r"^openbmb/MiniCPM3", "minicpm3", "RMSNorm", True),
    (r"^openbmb/MiniCPM", "minicpm", "RMSNorm", True),
    (r"^apple/OpenELM", "openelm", "RMSNorm", True),
    (r"^TRI-ML/DCLM", "openlm", "LayerNorm", True),
    (r"^allenai/OLMo", "olmo", "LayerNorm", True),
]
HUB_IDS = {"Llama-3.2-1B": "meta-llama/Llama-3.2-1B", "Llama-3.2-3B": "meta-llama/Llama-3.2-3B"}  # org missing
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}
WHY_NOT = {  # families slmkit does not implement, and what they need
    "qwen": "Qwen v1 (remote code: its own attention and tokenizer) is not implemented",
    "mobillama": "MobiLlama shares one FFN across layers (remote code); not implemented",
    "recurrent_gemma": "Griffin's recurrent blocks are not implemented",
    "minicpm": "MiniCPM's scaled embeddings and residuals (remote code) are not implemented",
    "minicpm3": "MiniCPM3's multi-head latent attention is not implemented",
    "openelm": "OpenELM's layer-wise head and FFN scaling is not implemented",
    "openlm": "DCLM's open_lm architecture is not implemented",
}
MODEL_NOTES = {  # models of a supported family that still do not run, or run with a caveat (docs/models.md)
    "microsoft/Phi-3.5-mini-instruct": (False, "phi3 with longrope scaling, which is not implemented yet "
                                               "(Phi-3-mini-4k runs)"),
    "tensoropera/Fox-1-1.6B": (True, "no preset yet; loads from the hub as llama if its config says so (not "
                                     "verified offline): -m tensoropera/Fox-1-1.6B"),
}


@dataclass(frozen=True)
class ZooModel:
    name: str  # the hub id
    family: str
    params: float
    released: str | None  # YYYY-MM
    affiliation: str | None
    instruct: bool
    attention: str | None  # MHA, GQA, MQA, MLA
    layers: int | None
    hidden: int | None
    heads: str | None  # "16", or "12-20" where the count varies by layer (OpenELM)
    activation: str | None  # relu, gelu, gelu_tanh, silu
    vocab: int | None
    ffn_ratio: float | None
    training_tokens: float | None
    datasets: tuple[str, ...]
    context: int | None
    norm: str
    gated_ffn: bool
    innovations: tuple[str, ...]
    commonsense: float | None  # fractions: the survey's commonsense reasoning and problem solving averages,
    problem_solving: float | None  # and GSM8K accuracy
    math: float | None
    icl: float | None
    baseline: bool  # one of the 4 Llama-7B reference rows, not an SLM
    link: str | None
    derived: tuple[str, ...] = field(default=("norm", "gated_ffn"))

    @property
    def year(self) -> int | None:
        return int(self.released[:4]) if self.released else None


@dataclass(frozen=True)
class PhoneRun:
    model: str  # the survey's name, e.g. "Qwen 1.5 0.5B"
    hub_id: str | None  # the catalogue's hub id when the model is in it
    device: str
    quantization: str
    memory_gb: float
    decode_tok_s: float
    decode_ms_per_token: float
    prefill_tok_s: float
    prefill_ms_per_token: float
    scores: dict[str, float]  # wino, hellaswag, mmlu (percent, as the survey gives them)


# --- cleaning ------------------------------------------------------------------------------------------------------

def _s(value: Any) -> str:
    return str(value or "").strip()


def _number(text: str) -> float | None:
    """'1.3B' -> 1.3e9, '500M' -> 5e8, '3T' -> 3e12, '180B Token Dataset' -> 1.8e11, '300B/207B' -> 3e11."""
    m = re.match(r"\s*([\d.]+)\s*([KMBT]?)", text, re.I)
    if not m:
        return None
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]


def _int(text: str) -> int | None:
    m = re.match(r"\s*(\d+)\s*(k?)", text, re.I)
    if not m:
        return None
    return int(m.group(1)) * (1024 if m.group(2) else 1)


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value


def family_of(hub_id: str) -> tuple[str, str, bool]:
    for pattern, family, norm, gated in FAMILIES:
        if re.search(pattern, hub_id):
            return family, norm, gated
    raise SlmError(f"no architecture family known for {hub_id!r}: add it to slmkit/zoo/catalogue.py FAMILIES")


def clean_model(row: dict) -> ZooModel:
    raw_name = _s(row["Model"])
    baseline = "[For Baseline]" in raw_name
    name = HUB_IDS.get(raw_name, raw_name)
    family, norm, gated = family_of("meta-llama/" if baseline else name)
    ffn = _float(_s(row["FFNratio"]))
    math = _float(_s(row["Math"]))
    return ZooModel(
        name=name, family=family, params=_number(_s(row["Parameters"])) or 0.0,
        released=_s(row["ReleaseDate"]).replace(".", "-") or None, affiliation=_s(row["affiliation"]) or None,
        instruct=_s(row["Type"]).lower() == "instruct", attention=_s(row["AttentionType"]) or None,
        layers=_int(_s(row["LayerNumber"])), hidden=_int(_s(row["HiddenSize"])), heads=_s(row["HeadNum"]) or None,
        activation=ACTIVATIONS.get(_s(row["Activation"]), _s(row["Activation"])) or None,
        vocab=_int(_s(row["VocabularySize"])), ffn_ratio=ffn if ffn else None,
        training_tokens=_number(_s(row["TrainingTokens"])),
        datasets=tuple(d.strip() for d in re.split(r"[,;]", _s(row["TrainingDatasets"])) if d.strip()),
        context=_int(_s(row["MaxContextWindow"])), norm=norm, gated_ffn=gated,
        innovations=tuple(x for x in (_s(row["ArchitectureInnovation"]), _s(row["TrainingInnovations"])) if x),
        commonsense=_float(_s(row["Commonsensereasoning"])), problem_solving=_float(_s(row["Problemsolving"])),
        math=math / 100 if math is not None else None, icl=_float(_s(row["IncontextLearning"])),
        baseline=baseline, link=_s(row["Link"]) or None)


PHONE_NAMES = {"Bloom 560m": "bigscience/bloom-560m", "Bloom 1.1B": "bigscience/bloom-1b1",
               "Qwen 1.5 0.5B": "Qwen/Qwen1.5-0.5B", "Qwen 1.5 1.8B": "Qwen/Qwen1.5-1.8B",
               "Qwen 1.5 4B": "Qwen/Qwen1.5-4B", "Qwen 1.8B": "Qwen/Qwen-1_8B",
               "StableLM-3b-4e1t 3B": "stabilityai/stablelm-3b-4e1t"}


def clean_phone(row: dict) -> PhoneRun:
    def speeds(text: str) -> tuple[float, float]:  # "total_ms/n_tokens/ms_per_token/tokens_per_s"
        parts = [float(p) for p in text.split("/")]
        return parts[3], parts[2]

    name = " ".join(_s(row["name"]).split())
    decode, prefill = speeds(row["decoding_latency"]), speeds(row["prefilling_latency"])
    perf = {k: float(v) for k, v in (row.get("performance") or {}).items() if k != "model" and _float(_s(v))}
    return PhoneRun(name, PHONE_NAMES.get(name), _s(row["device"]), _s(row["quantization"]),
                    float(row["memory"]), decode[0], decode[1], prefill[0], prefill[1], perf)


def build(zoo_dir: Path, out_dir: Path = DATA) -> tuple[Path, Path]:
    """Clean the survey's SLM.json and phone_latency.json (in zoo_dir) into the package's data files."""
    from slmkit.paths import write_atomic

    try:
        raw = json.loads((zoo_dir / "SLM.json").read_text())
        phones = json.loads((zoo_dir / "phone_latency.json").read_text())
    except (OSError, ValueError) as e:
        raise SlmError(f"cannot read the survey's data in {zoo_dir}: {e}") from e
    models = [asdict(clean_model(r)) for r in raw]
    runs = [asdict(clean_phone(r)) for r in phones]
    cat, ph = out_dir / "catalogue.json", out_dir / "phones.json"
    write_atomic(cat, json.dumps(models, indent=1) + "\n")
    write_atomic(ph, json.dumps(runs, indent=1) + "\n")
    return cat, ph


# --- reading -------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def catalogue(include_baselines: bool = False) -> tuple[ZooModel, ...]:
    rows = json.loads((DATA / "catalogue.json").read_text())
    models = [ZooModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()}) for r in rows]
    return tuple(m for m in models if include_baselines or not m.baseline)


@lru_cache(maxsize=1)
def phone_runs() -> tuple[PhoneRun, ...]:
    return tuple(PhoneRun(**r) for r in json.loads((DATA / "phones.json").read_text()))


def find(name: str) -> ZooModel | None:
    """A catalogue model by hub id (or its last part, case-insensitive)."""
    key = name.strip().lower()
    for m in catalogue(include_baselines=True):
        if m.name.lower() == key or m.name.split("/")[-1].lower() == key:
            return m
    return None


@dataclass(frozen=True)
class Runner:
    preset: str | None  # the slmkit preset with this hub id
    runnable: bool  # slmkit implements the architecture (with or without a preset)
    note: str  # how to run it, or why nothing does yet


def runner(model: ZooModel) -> Runner:
    """What in slmkit runs a catalogue model: its preset, the hub id for a supported family, or why none."""
    from slmkit.model.families import model_types
    from slmkit.model.presets import PRESETS

    for name, spec in PRESETS.items():
        if spec.get("hf_id", "").lower() == model.name.lower():
            return Runner(name, True, f"-m {name}")
    if model.baseline:
        return Runner(None, False, "a 7B baseline row, not an SLM")
    if model.name in MODEL_NOTES:
        return Runner(None, *MODEL_NOTES[model.name])
    if model.family in model_types():
        return Runner(None, True, f"no preset yet; the {model.family} family loads from the hub: -m {model.name}")
    return Runner(None, False, WHY_NOT.get(model.family, f"the {model.family} architecture is not implemented"))


def select(models, min_params: float | None = None, max_params: float | None = None, after: str | None = None,
           before: str | None = None, attention: str | None = None, family: str | None = None,
           runnable: bool | None = None) -> list[ZooModel]:
    """Filter catalogue models; dates compare as YYYY-MM prefixes ('2024' is all of 2024)."""
    out = []
    for m in models:
        if min_params is not None and m.params < min_params or max_params is not None and m.params > max_params:
            continue
        if after and (not m.released or m.released < after):
            continue
        if before and (not m.released or m.released[:len(before)] > before):
            continue
        if attention and (m.attention or "").lower() != attention.lower():
            continue
        if family and m.family.lower() != family.lower():
            continue
        if runnable is not None and runner(m).runnable != runnable:
            continue
        out.append(m)
    return out


def parse_params(text: str) -> float:
    value = _number(text)
    if value is None or not re.fullmatch(r"\s*[\d.]+\s*[KMBT]?\s*", text, re.I):
        raise SlmError(f"not a parameter count: {text!r} (write e.g. 500M or 1.5B)")
    return value


def _fmt_params(n: float) -> str:
    return f"{n / 1e9:.2g}B" if n >= 1e9 else f"{n / 1e6:.0f}M"


def markdown(models: Sequence[ZooModel]) -> str:
    """The models as a markdown table, with what in slmkit runs each."""
    lines = ["| model | params | released | attention | family | layers | hidden | vocab | slmkit |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        r = runner(m)
        lines.append(f"| {m.name} | {_fmt_params(m.params)} | {m.released or ''} | {m.attention or ''} | {m.family} | "
                     f"{m.layers or ''} | {m.hidden or ''} | {m.vocab or ''} | {r.note} |")
    return "\n".join(lines)
