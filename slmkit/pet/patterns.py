"""Patterns and verbalizers as data: a PatternSet (one YAML file) says which slm eval task it scores, where its
few-shot examples are (a FewGLUE folder), the label values in the task's choice order, how records map to the
pattern's fields, and the patterns: a text with one {mask} and a verbalizer (label -> word).

    patterns:
      - text: '"{hypothesis}" ? {mask}, "{premise}"'
        verbalizer: {entailment: "Yes", not_entailment: "No"}

A field named in rstrip_punct loses its final punctuation (PET's hypothesis), one in lowercase_first its first
capital (PET's COPA choices); `<field>_full` keeps the original. `derived` fields map another field's values to
text (COPA's connective: {from: question, map: {cause: " because", effect: ", so"}}). A verbalizer word may be
several tokens, or a template over the record ("{choice1}": COPA's answers are its choices); each is then scored
as a token sequence. `classifier` gives the text (and text_pair) templates of the head classifier that PET's
supervised baseline and distillation train (default: the first field, and the second as the pair).
A decoder reads the label as the next token after the pattern, so it uses the patterns that end with {mask}
(punctuation aside); `only: decoder` (or `only: masked-lm`) keeps a pattern to one kind of model.
Mistakes in a file (no {mask}, a field that does not exist, a verbalizer missing a label) are one line.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slmkit.errors import SlmError

BUILTIN = Path(__file__).parent / "patterns"


@dataclass
class Pattern:
    text: str  # a str.format template over the record's fields, with exactly one {mask}
    verbalizer: dict[str, str]  # label value -> word
    only: str | None = None  # "decoder" or "masked-lm": a pattern for that kind of model alone

    def words(self, labels: list[str], record: dict | None = None) -> list[str]:
        """The labels' words, filled from the record's fields where a word is a template ("{choice1}")."""
        from slmkit.train.labelled import fill_word

        words = [self.verbalizer[v] for v in labels]
        return words if record is None else [fill_word(w, record, f"pattern {self.text!r}") for w in words]

    def fits(self, causal: bool) -> bool:
        """Whether a model of this kind uses the pattern: a decoder reads the label after the pattern, so its
        patterns end with {mask}; `only` keeps a pattern to one kind."""
        from slmkit.train.labelled import mask_final

        if self.only is not None and self.only != ("decoder" if causal else "masked-lm"):
            return False
        return mask_final(self.text) if causal else True


@dataclass
class PatternSet:
    task: str
    labels: list[str]
    fields: dict[str, str]
    eval_fields: dict[str, str]
    patterns: list[Pattern]
    fewglue: str = ""
    rstrip_punct: list[str] = field(default_factory=list)
    lowercase_first: list[str] = field(default_factory=list)
    derived: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)  # name -> (field, value -> text)
    classifier: dict[str, str] = field(default_factory=dict)  # text (and text_pair) of the head classifier's input
    source: str = ""

    def classifier_input(self, record: dict) -> tuple[str, str | None]:
        """The head classifier's (text, text_pair) for a record."""
        names = list(self.fields)
        text = self.classifier.get("text", "{" + names[0] + "}")
        pair = self.classifier.get("text_pair", "{" + names[1] + "}" if len(names) > 1 else None)
        return text.format(**record), (pair.format(**record) if pair else None)

    def usable(self, causal: bool) -> list[int]:
        """The indices of the patterns a masked LM (causal False) or a decoder trains on; none is one line."""
        out = [i for i, p in enumerate(self.patterns) if p.fits(causal)]
        if not out:
            raise SlmError(f"{self.source}: no pattern for a {'decoder' if causal else 'masked LM'}"
                           + (" (a decoder's pattern ends with {mask})" if causal else ""))
        return out

    def record(self, raw: dict, mapping: dict[str, str], where: str, label: Any = None) -> dict:
        """A record's pattern fields (and its label index when `label` is given: a value of self.labels or an
        index)."""
        out: dict[str, Any] = {}
        for name, src in mapping.items():
            if src not in raw:
                raise SlmError(f"{where}: the record has no field {src!r} (for the pattern field {name!r}); it has "
                               f"{', '.join(raw)}")
            value = str(raw[src]).strip()
            out[name + "_full"] = value
            out[name] = value.rstrip(string.punctuation) if name in self.rstrip_punct else value
            if name in self.lowercase_first and out[name]:
                out[name] = out[name][0].lower() + out[name][1:]
        for name, (src, table) in self.derived.items():
            value = str(out.get(src, "")).strip()
            if value not in table:
                raise SlmError(f"{where}: field {src!r} is {value!r}; the derived field {name!r} knows "
                               f"{', '.join(map(repr, table))}")
            out[name] = table[value]
        if label is not None:
            names = [str(v) for v in self.labels]
            if isinstance(label, int) and not isinstance(label, bool) and str(label) not in names:
                if not 0 <= label < len(names):
                    raise SlmError(f"{where}: label {label} is outside the {len(names)} labels {names}")
                out["label"] = label
            elif str(label) in names:
                out["label"] = names.index(str(label))
            else:
                raise SlmError(f"{where}: label {label!r} is not one of the labels {names}")
        return out


def load_patterns(name_or_path: str) -> PatternSet:
    """A built-in set by task name (rte, cb, boolq) or a YAML file."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        path = BUILTIN / f"{name_or_path}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in BUILTIN.glob("*.yaml")))
        raise SlmError(f"no pattern set {name_or_path!r}: give a YAML file or one of {names}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SlmError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SlmError(f"{path}: a pattern set is a mapping (task, labels, fields, eval_fields, patterns)")
    missing = [k for k in ("task", "labels", "fields", "patterns") if k not in raw]
    if missing:
        raise SlmError(f"{path}: missing key {missing[0]!r}")
    labels = [str(v) for v in raw["labels"]]
    fields = {str(k): str(v) for k, v in raw["fields"].items()}
    derived = {}
    for name, d in (raw.get("derived") or {}).items():
        if not isinstance(d, dict) or d.get("from") not in fields or not isinstance(d.get("map"), dict):
            raise SlmError(f"{path}: derived field {name!r} needs from (one of the fields: {', '.join(fields)}) and "
                           f"map (value: text)")
        derived[str(name)] = (str(d["from"]), {str(k): str(v) for k, v in d["map"].items()})
    names = set(fields) | {f + "_full" for f in fields} | set(derived) | {"mask"}

    def check_fields(text: str, where: str) -> None:
        used = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
        unknown = [f for f in used if f not in names or f == "mask"]
        if unknown:
            raise SlmError(f"{where}: field {{{unknown[0]}}} is not a pattern field "
                           f"({', '.join(sorted(names - {'mask'}))})")
    patterns = []
    for i, p in enumerate(raw["patterns"] or []):
        where = f"{path}: pattern {i}"
        if not isinstance(p, dict) or not isinstance(p.get("text"), str) or not isinstance(p.get("verbalizer"), dict):
            raise SlmError(f"{where}: give text (with one {{mask}}) and verbalizer (label: word)")
        used = [f for _, f, _, _ in string.Formatter().parse(p["text"]) if f is not None]
        if used.count("mask") != 1:
            raise SlmError(f"{where}: the pattern needs exactly one {{mask}}, it has {used.count('mask')}: "
                           f"{p['text']!r}")
        unknown = [f for f in used if f not in names]
        if unknown:
            raise SlmError(f"{where}: field {{{unknown[0]}}} is not a pattern field ({', '.join(sorted(fields))})")
        flags = [k for k, v in p["verbalizer"].items() if isinstance(v, bool) or not isinstance(v, (str, int, float))]
        if flags:
            raise SlmError(f"{where}: the verbalizer word for {flags[0]!r} reads as "
                           f"{p['verbalizer'][flags[0]]!r}, not a word (YAML turns bare yes/no/true/false into "
                           f"booleans): quote it")
        verb = {str(k): str(v) for k, v in p["verbalizer"].items()}
        for w in verb.values():
            check_fields(w, f"{where}: verbalizer word {w!r}")
        lacking = [v for v in labels if v not in verb]
        if lacking or set(verb) - set(labels):
            raise SlmError(f"{where}: the verbalizer must name each label once ({', '.join(labels)}); "
                           f"{'missing ' + lacking[0] if lacking else 'unknown ' + sorted(set(verb) - set(labels))[0]}")
        only = p.get("only")
        if only not in (None, "decoder", "masked-lm"):
            raise SlmError(f"{where}: only is 'decoder' or 'masked-lm', got {only!r}")
        patterns.append(Pattern(p["text"], verb, only))
    if not patterns:
        raise SlmError(f"{path}: no patterns")
    classifier = {str(k): str(v) for k, v in (raw.get("classifier") or {}).items()}
    if set(classifier) - {"text", "text_pair"}:
        raise SlmError(f"{path}: classifier takes text and text_pair, got {sorted(set(classifier) - {'text', 'text_pair'})[0]!r}")
    for k, v in classifier.items():
        check_fields(v, f"{path}: classifier {k}")
    return PatternSet(task=str(raw["task"]), labels=labels, fields=fields,
                      eval_fields={str(k): str(v) for k, v in (raw.get("eval_fields") or fields).items()},
                      patterns=patterns, fewglue=str(raw.get("fewglue", "")),
                      rstrip_punct=[str(x) for x in raw.get("rstrip_punct") or []],
                      lowercase_first=[str(x) for x in raw.get("lowercase_first") or []], derived=derived,
                      classifier=classifier, source=str(path))


def fill(pattern: Pattern, record: dict) -> tuple[str, str]:
    """The pattern's text before and after the mask, filled with the record's fields."""
    marker = "\x00MASK\x00"
    text = pattern.text.format(**record, mask=marker)
    before, after = text.split(marker)
    return before, after
