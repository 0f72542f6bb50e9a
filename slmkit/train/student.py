"""A student for distillation: cut from a teacher's own layers (model.layers), and which of its layer outputs
imitate which of the teacher's (objective hidden, recipe.hidden.pairs)."""

from __future__ import annotations

import dataclasses

import torch

from slmkit.errors import SlmError
from slmkit.model.model import Transformer


def take_layers(model: Transformer, layers: list[int]) -> Transformer:
    """The model with only the given layers (0-based, in order): a student cut from a teacher, as DistilBERT takes
    every other layer of BERT."""
    c = model.config
    if not layers or any(not 0 <= i < c.n_layer for i in layers) or sorted(set(layers)) != list(layers):
        raise SlmError(f"model.layers must list distinct layers of {c.name}'s {c.n_layer} in order, got {layers}")
    if c.layer_repeat != 1:
        raise SlmError(f"model.layers cannot cut {c.name}, whose layers are shared (layer_repeat)")
    config = dataclasses.replace(c, n_layer=len(layers), layer_types=[c.layer_types[i] for i in layers],
                                 name=f"{c.name}-{len(layers)}L")
    with torch.device("meta"):
        new = Transformer(config)
    keep = {f"blocks.{i}.": f"blocks.{j}." for j, i in enumerate(layers)}
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("blocks."):
            prefix = ".".join(k.split(".")[:2]) + "."
            if prefix not in keep:
                continue
            k = keep[prefix] + k[len(prefix):]
        state[k] = v
    new.load_state_dict(state, strict=True, assign=True)
    new.tie_weights()
    new.reset_buffers(model.device)
    return new.float()


def hidden_pairs(given: list[list[int]] | None, student: Transformer, teacher: Transformer
                 ) -> list[tuple[int, int]]:
    """Objective hidden's (student, teacher) layer outputs: the given pairs (recipe.hidden.pairs), or each student
    layer against the teacher's at the same relative depth; the widths must agree (no projection is learned)."""
    if student.config.d_model != teacher.config.d_model:
        raise SlmError(f"objective hidden compares hidden states: the student's width {student.config.d_model} is "
                       f"not the teacher's {teacher.config.d_model} (cut the student from the teacher: model.layers)")
    ls, lt = student.n_exec_layers, teacher.n_exec_layers
    pairs = given or [[i, round(i * lt / ls)] for i in range(1, ls + 1)]
    for pair in pairs:
        if len(pair) != 2 or not 0 <= pair[0] <= ls or not 0 <= pair[1] <= lt:
            raise SlmError(f"hidden.pairs: {pair} is not [student layer 0..{ls}, teacher layer 0..{lt}]")
    return [(int(i), int(j)) for i, j in pairs]
