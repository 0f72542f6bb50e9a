"""Data and training: slm data prepare, slm train, slm distill (the arguments of train and distill live in
slmkit.train.command, which `python -m slmkit.train` under torchrun shares)."""

from __future__ import annotations

import argparse

from slmkit.cli.args import MODEL_HELP, at_least, overwrite_arg, quiet_arg, verb


def data_prepare(inputs: list[str], out: str, tokenizer: str = "default", train_tokenizer: int | None = None,
                 val_fraction: float = 0.01, block: int = 2048, template: str | None = None,
                 prompt_template: str | None = None, separator: str | None = None, quiet: bool = False,
                 overwrite: bool = False) -> None:
    """Tokenize text, JSONL(.gz), CSV/TSV or parquet files and folders into token shards (train.bin, val.bin,
    meta.json, tokenizer) for `slm train`; documents are separated by the end-of-text token."""
    from slmkit.errors import SlmError
    from slmkit.outputs import claim_dir
    from slmkit.train.data import prepare

    claim_dir(out, "data", overwrite, replaces=True)  # before any tokenizing
    if train_tokenizer:
        from slmkit.tokenizer.train import train_bpe

        tok = train_bpe(inputs, vocab_size=train_tokenizer, template=template)
        source = f"BPE trained on the inputs ({train_tokenizer} tokens)"
    else:
        from slmkit.checkpoint import load_tokenizer

        tok = load_tokenizer(tokenizer)
        if tok is None:
            raise SlmError(f"{tokenizer}: has no tokenizer; name a model with one, or use --train-tokenizer SIZE")
        source = tokenizer
    path, meta = prepare(inputs, out, tok, source, val_fraction=val_fraction, block=block, template=template,
                         progress=not quiet, separator=separator, prompt_template=prompt_template, overwrite=overwrite)
    for s in meta["sources"]:
        print(f"  {s['file']}: {s['documents']:,} documents, {s['tokens']:,} tokens")
    print(f"wrote {path}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens from "
          f"{meta['documents']:,} documents ({meta['dtype']}, vocabulary {meta['vocab_size']:,})")


def data_instruct(out: str, data: str | None = None, sources: str = "t0,flan_cot,eval", hold_out: str = "",
                  cap: int = 3000, size: int | None = None, formats: str = "zero=0.5,few=0.3,cot=0.2",
                  shots: int = 3, templates: str = "all", templates_file: str | None = None, reserve: int = 0,
                  max_prompt_chars: int = 6000, seed: int = 0, overwrite: bool = False) -> None:
    """Build an instruction-tuning mixture (FLAN / Flan 2022): T0's templated tasks, Flan's chain-of-thought sets
    and eval train splits from the shared data folder, clusters held out by name, each task capped, records drawn
    examples-proportionally, each formatted at random as zero-shot, few-shot or chain of thought. Writes
    OUT/train.jsonl (prompt, response, _task, _template, _format, _cluster, _inverted, _shots), OUT/reserved.jsonl
    (held-back CoT items for evaluation) and OUT/mixture.json; `slm data prepare OUT/train.jsonl --prompt-template
    '{prompt}' --template '{response}'` then makes shards with the loss on the responses."""
    from pathlib import Path

    from slmkit.errors import SlmError
    from slmkit.eval.data import shared_data_dir
    from slmkit.instruct.mixture import MixtureSpec, build, parse_formats, write
    from slmkit.instruct.templates import load_templates
    from slmkit.outputs import claim_dir

    root = Path(data) if data else shared_data_dir()
    if root is None or not root.is_dir():
        raise SlmError(f"{data or 'the shared data folder'} not found: pass --data DIR or set $SLMKIT_DATA to the "
                       f"folder that holds instruct/ and eval/")
    spec = MixtureSpec(sources=tuple(filter(None, (x.strip() for x in sources.split(",")))),
                       hold_out=tuple(filter(None, (x.strip() for x in hold_out.split(",")))), cap=cap, size=size,
                       formats=parse_formats(formats), shots=shots, templates=templates, reserve=reserve,
                       max_prompt_chars=max_prompt_chars, seed=seed)
    spec.check()
    claim_dir(out, "mixture", overwrite, replaces=True)
    user = load_templates(templates_file) if templates_file else None
    mix = build(root, spec, user)
    write(mix, out, overwrite)
    st = mix.stats
    fmts = ", ".join(f"{k} {v / max(1, st['records']):.0%}" for k, v in st["formats"].items())
    print(f"  {len(st['tasks'])} tasks, {st['templates']} templates ({st['inverted']:,} inverted records); "
          f"formats: {fmts}")
    print(f"  clusters: {', '.join(f'{k} {v:,}' for k, v in st['clusters'].items())}")
    if st["held_out_tasks"]:
        print(f"  held out: {', '.join(st['held_out_tasks'])}")
    print(f"wrote {out}/train.jsonl: {st['records']:,} records"
          + (f"; {out}/reserved.jsonl: {st['reserved']:,} CoT items kept out for evaluation" if st["reserved"] else ""))


def data_orca(out: str, teacher: str = "default", data: str | None = None,
              tasks: str = "gsm8k,ecqa,strategyqa,sensemaking", per_task: int = 100, eval: int = 24,
              max_new_tokens: int = 160, api_key: str | None = None, quiet: bool = False, overwrite: bool = False) -> None:
    """Orca 2's data with prompt erasure: a teacher (a model, or an OpenAI-compatible endpoint URL) answers Flan CoT
    items under the detailed system prompt of each task type's strategy (step by step; recall then generate;
    recall, reason, generate; direct answer). Writes the students' records OUT/kept.jsonl (the detailed prompt
    kept), OUT/erased.jsonl (replaced by a generic prompt), OUT/answers.jsonl (the reference answer alone), the
    teacher's answers with their checks (OUT/teacher.jsonl), held-out items (OUT/heldout.jsonl) and OUT/orca.json."""
    from pathlib import Path

    from slmkit.errors import SlmError
    from slmkit.eval.data import shared_data_dir
    from slmkit.instruct import orca
    from slmkit.outputs import claim_dir

    root = Path(data) if data else shared_data_dir()
    if root is None or not root.is_dir():
        raise SlmError(f"{data or 'the shared data folder'} not found: pass --data DIR or set $SLMKIT_DATA")
    if per_task < 1 or eval < 1 or max_new_tokens < 1:
        raise SlmError("--per-task, --eval and --max-new-tokens must be at least 1")
    claim_dir(out, "orca", overwrite, replaces=True)
    train_items, held = orca.items(root, tuple(filter(None, (t.strip() for t in tasks.split(",")))), per_task, eval)
    result = orca.build(orca.teacher_for(teacher, api_key=api_key), train_items, held, max_new_tokens,
                        progress=not quiet)
    orca.write(result, out, overwrite)
    st = result.stats
    for task, t in st["per_task"].items():
        print(f"  {task} ({t['strategy']}): {t['n']} answers, follow the strategy {t['follows'] / t['n']:.0%}, "
              f"correct {t['correct'] / t['n']:.0%}")
    print(f"wrote {out}: {st['items'] - st['failed']:,} teacher answers ({st['failed']} failed) for the students "
          f"kept/erased/answers, {st['heldout']} held-out items")


def pet(model: str, patterns: str, out: str, generations: int = 0, seeds: str = "0", steps: int = 250,
        lr: float = 1e-5, batch: int = 16, max_len: int = 256, unlabelled: str = "fewglue",
        distill_steps: int = 250, limit: int | None = None, zero_shot: bool = False, data: str | None = None,
        lora: int = 0, overwrite: bool = False) -> None:
    """PET / iPET (Schick & Schütze): a masked LM (or a decoder, on the patterns that end with the mask; with
    --lora R a LoRA adapter of rank R) trained as a cloze per pattern on FewGLUE's 32 labelled examples,
    the patterns' ensemble, and a classifier distilled from it on unlabelled examples; with --generations N, iPET.
    Patterns and verbalizers are YAML (slmkit/pet/patterns: rte, cb, boolq, copa; or a file). Scores on the task's dev
    set (slm eval's documents); writes OUT/pet.json."""
    import json
    from pathlib import Path

    from slmkit.errors import SlmError
    from slmkit.eval.data import shared_data_dir
    from slmkit.outputs import claim_dir, mark_dir
    from slmkit.paths import write_atomic
    from slmkit.device import native_precision
    from slmkit.pet import run as P
    from slmkit.pet.patterns import load_patterns

    pset = load_patterns(patterns)
    root = Path(data) if data else (shared_data_dir() / "fewglue" if shared_data_dir() else None)
    if root is None or not root.is_dir():
        raise SlmError(f"{data or 'the FewGLUE folder'} not found: pass --data DIR (FewGLUE) or set $SLMKIT_DATA")
    if unlabelled not in ("fewglue", "dev", "none"):
        raise SlmError(f"--unlabelled must be fewglue, dev or none, got {unlabelled!r}")
    try:
        seed_list = tuple(int(x) for x in seeds.split(",") if x.strip())
    except ValueError:
        raise SlmError(f"--seeds: comma-separated whole numbers, got {seeds!r}") from None
    if lora < 0:
        raise SlmError(f"--lora is a LoRA rank (0: full fine-tuning), got {lora}")
    claim_dir(out, "pet", overwrite)
    labelled = P.read_fewglue(pset, root, "train")
    dev = P.dev_records(pset, limit)
    unl: list[dict] = []
    if unlabelled == "fewglue":
        if not (root / pset.fewglue / "unlabeled.jsonl").is_file():
            raise SlmError(f"FewGLUE has no unlabelled set for {pset.fewglue} here ({root / pset.fewglue}); use "
                           f"--unlabelled dev (the dev inputs without their labels: transductive) or none (PET's "
                           f"ensemble, no distillation or iPET)")
        unl = P.read_fewglue(pset, root, "unlabeled", labelled=False)
    elif unlabelled == "dev":
        unl = [{k: v for k, v in r.items() if k != "label"} for r in dev]
    cfg = P.PetConfig(model=model, steps=steps, batch=batch, lr=lr, max_len=max_len, seeds=seed_list,
                      distill_steps=distill_steps, generations=generations,
                      lora=dict(r=lora, alpha=2 * lora, targets=["all-linear"], base=native_precision())
                      if lora else None, precision=native_precision() if lora else "fp32")
    results = {"task": pset.task, "patterns": pset.source, "model": model, "labelled": len(labelled),
               "unlabelled": {"source": unlabelled, "n": len(unl)}, "dev": len(dev), "config": cfg.__dict__}
    if zero_shot:
        results["zero_shot"] = P.zero_shot(pset, cfg, dev)
        print("zero-shot: " + ", ".join(f"{k} {100 * v['acc']:.1f}%" for k, v in results["zero_shot"].items()))
    results.update(P.run_pet(pset, cfg, labelled, unl, dev, Path(out) / "work", distill=bool(unl), progress=print))
    write_atomic(Path(out) / "pet.json", json.dumps(results, indent=2))
    mark_dir(out, "pet")
    last = results["generations"][-1]
    print(f"{pset.task}: {'i' if generations else ''}PET ensemble {100 * last['ensemble']['acc']:.1f}%"
          + (f", distilled {100 * results['distilled']['acc']:.1f}%" if "distilled" in results else "")
          + f" on {len(dev)} dev items; wrote {out}/pet.json")


def data_fewglue(patterns: str, out: str, split: str = "train", data: str | None = None) -> None:
    """FewGLUE's examples (the 32 labelled ones by default) as documents of the pattern set's slm eval task, for
    `slm eval --fewshot-file`: in-context learning from the examples PET trains on."""
    import json
    from pathlib import Path

    from slmkit.errors import SlmError
    from slmkit.eval.data import shared_data_dir
    from slmkit.paths import write_atomic
    from slmkit.pet import run as P
    from slmkit.pet.patterns import load_patterns

    pset = load_patterns(patterns)
    root = Path(data) if data else (shared_data_dir() / "fewglue" if shared_data_dir() else None)
    if root is None or not root.is_dir():
        raise SlmError(f"{data or 'the FewGLUE folder'} not found: pass --data DIR (FewGLUE) or set $SLMKIT_DATA")
    docs = P.as_task_docs(pset, P.read_fewglue(pset, root, split))
    write_atomic(Path(out), "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs))
    print(f"wrote {out}: {len(docs)} {pset.task} documents from FewGLUE {pset.fewglue}/{split}")


def train(ns: argparse.Namespace) -> None:
    """Train a model from a recipe (YAML; see recipes/): pretraining, fine-tuning, or distillation when the recipe
    has a distill section. Runs in one process, or in many under torchrun (python -m slmkit.train)."""
    from slmkit.train import command

    command.run(ns)


def distill(ns: argparse.Namespace) -> None:
    """Distil a teacher into a student: the same loop as `slm train`, with the recipe's distill section (loss
    forward_kl, reverse_kl or topk_kl, temperature, alpha) and --teacher."""
    from slmkit.train import command

    command.run(ns, distill=True)


def register(sub) -> None:
    from slmkit.train import command

    t = verb(sub, "pet", pet)
    t.add_argument("--model", "-m", required=True, help="a masked LM (a BERT/RoBERTa folder) or a decoder (a folder, "
                   "GGUF or name such as gemma3-270m: the patterns that end with the mask) to train per pattern")
    t.add_argument("--patterns", "-p", required=True, help="a pattern set: rte, cb, boolq, copa or a YAML file")
    t.add_argument("-o", "--out", required=True, help="output folder (pet.json, work/)")
    t.add_argument("--generations", type=at_least(0), default=0, help="iPET generations after the first (0: PET)")
    t.add_argument("--seeds", default="0", help="comma-separated seeds: one model per pattern and seed")
    t.add_argument("--steps", type=at_least(1), default=250, help="training steps per pattern model (PET: 250)")
    t.add_argument("--lr", type=float, default=1e-5, help="learning rate (PET: 1e-5)")
    t.add_argument("--batch", type=at_least(1), default=16)
    t.add_argument("--max-len", type=at_least(8), default=256)
    t.add_argument("--unlabelled", default="fewglue", help="fewglue (the set's unlabeled.jsonl), dev (the dev "
                   "inputs without labels: transductive) or none (no distillation, no iPET)")
    t.add_argument("--distill-steps", type=at_least(1), default=250)
    t.add_argument("--limit", type=at_least(1), help="the first N dev documents")
    t.add_argument("--zero-shot", action="store_true", help="also score each pattern with the untrained model")
    t.add_argument("--lora", type=at_least(0), default=0, metavar="R", help="train a LoRA adapter of rank R (alpha "
                   "2R, every linear layer; bf16 where the device has it natively) instead of the whole model: for "
                   "decoders (default 0: full)")
    t.add_argument("--data", help="the FewGLUE folder (default $SLMKIT_DATA/fewglue)")
    overwrite_arg(t)

    dsub = sub.add_parser("data", help="prepare token shards for training", description="Data: slm data prepare.")
    dsub = dsub.add_subparsers(dest="action", metavar="ACTION", required=True)
    d = verb(dsub, "fewglue", data_fewglue)
    d.add_argument("--patterns", "-p", required=True, help="a pattern set naming the task: rte, cb, boolq, copa or YAML")
    d.add_argument("-o", "--out", required=True, help="the JSONL file to write")
    d.add_argument("--split", default="train", help="FewGLUE's file: train (default)")
    d.add_argument("--data", help="the FewGLUE folder (default $SLMKIT_DATA/fewglue)")
    d = verb(dsub, "prepare", data_prepare)
    d.add_argument("inputs", nargs="+", help="files or folders (.txt .md .jsonl .jsonl.gz .csv .tsv .parquet)")
    d.add_argument("-o", "--out", required=True, help="shard folder to write; a previous shard folder there is "
                                                     "replaced atomically, anything else is refused (--overwrite)")
    d.add_argument("--tokenizer", "-m", default="default", help="the model whose tokenizer to use: " + MODEL_HELP)
    d.add_argument("--train-tokenizer", type=at_least(2), metavar="VOCAB_SIZE",
                   help="train a byte-level BPE tokenizer of this size on the inputs instead")
    d.add_argument("--val-fraction", type=float, default=0.01, help="share of tokens for validation (default 0.01)")
    d.add_argument("--block", type=at_least(1), default=2048,
                   help="the split's unit: every k-th block of this many tokens goes to val (default 2048)")
    d.add_argument("--template", help="how a record becomes text: '{prompt}{completion}' for JSON fields, "
                                      "'{0}\\n{1}' for table columns (default: the text field, or "
                                      "prompt+completion, question+answer; table columns joined by newlines)")
    d.add_argument("--prompt-template", help="instruction data: the record's prompt part, e.g. '{prompt}'; --template "
                                             "is then the response ('{completion}') and only the response (and the "
                                             "separator after it) carries loss (writes train/val.mask.bin)")
    d.add_argument("--separator", help="token between documents (default <|endoftext|> if the vocabulary has it, "
                                       "else the end-of-sequence token)")
    quiet_arg(d, "no progress bar")
    overwrite_arg(d)

    m = verb(dsub, "instruct", data_instruct)
    m.add_argument("-o", "--out", required=True, help="mixture folder to write (train.jsonl, reserved.jsonl, "
                                                     "mixture.json)")
    m.add_argument("--data", help="the shared data folder (default $SLMKIT_DATA, else ../shared/data)")
    m.add_argument("--sources", default="t0,flan_cot,eval", help="comma-separated: t0 (T0's 50k templated "
                   "examples), flan_cot (Flan's CoT sets), eval (eval train splits) (default all)")
    m.add_argument("--hold-out", default="", metavar="CLUSTERS",
                   help="task clusters to keep out of training, e.g. sentiment or commonsense")
    m.add_argument("--cap", type=int, default=3000, help="records per task at most (default 3000)")
    m.add_argument("--size", type=int, help="records in the mixture, drawn in proportion to the capped task sizes "
                                            "(default: every capped record)")
    m.add_argument("--formats", default="zero=0.5,few=0.3,cot=0.2",
                   help="format weights, renormalised over what each task allows (default zero=0.5,few=0.3,cot=0.2)")
    m.add_argument("--shots", type=int, default=3, help="exemplars in a few-shot prompt (default 3)")
    m.add_argument("--templates", choices=("all", "one"), default="all",
                   help="all of each task's templates, or one (the ablation)")
    m.add_argument("--templates-file", help="JSON {task: [{name, prompt, response, inverted?, cot?}]} replacing "
                                            "those tasks' built-in templates")
    m.add_argument("--reserve", type=int, default=0, help="keep the last N items of each CoT task out, in "
                                                          "reserved.jsonl (default 0)")
    m.add_argument("--max-prompt-chars", type=int, default=6000,
                   help="a few-shot prompt drops exemplars until it is this short (default 6000)")
    m.add_argument("--seed", type=int, default=0)
    overwrite_arg(m)

    o = verb(dsub, "orca", data_orca)
    o.add_argument("-o", "--out", required=True, help="folder to write (kept/erased/answers.jsonl, heldout.jsonl, ...)")
    o.add_argument("--teacher", default="default", help="the teacher: a model (" + MODEL_HELP + ") with a chat "
                   "template, or the URL of an OpenAI-compatible server (http://host:port)")
    o.add_argument("--api-key", help="bearer token for the teacher endpoint")
    o.add_argument("--data", help="the shared data folder (default $SLMKIT_DATA, else ../shared/data)")
    o.add_argument("--tasks", default="gsm8k,ecqa,strategyqa,sensemaking",
                   help="Flan CoT tasks (each has its strategy; default gsm8k,ecqa,strategyqa,sensemaking)")
    o.add_argument("--per-task", type=int, default=100, help="teacher items per task: the first N (default 100)")
    o.add_argument("--eval", type=int, default=24, help="held-out items per task: the last N (default 24)")
    o.add_argument("--max-new-tokens", type=int, default=160)
    quiet_arg(o, "no progress bar")
    overwrite_arg(o)

    for name, fn, is_distill in (("train", train, False), ("distill", distill, True)):
        s = verb(sub, name, fn)
        command.add_arguments(s, distill=is_distill)
        overwrite_arg(s)
