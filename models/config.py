"""The shape of one decoder of the family: the architecture fields every run, ladder and results row uses."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from scaling.common.errors import InputError


@dataclass(frozen=True)
class ModelShape:
    d_model: int  # width of the residual stream
    n_layers: int  # transformer blocks
    n_heads: int  # query heads; head_dim = d_model // n_heads
    n_kv_heads: int  # key/value heads (grouped-query attention); n_heads must be a multiple of it
    d_ff: int  # hidden width of the SwiGLU MLP
    vocab_size: int  # token ids 0 .. vocab_size - 1
    max_seq_len: int  # longest context the rotary tables are built for
    tied_embeddings: bool = False  # output head reuses the input embedding matrix
    parametrization: str = "standard"  # standard | mup (models.parametrization)
    mup_base_d_model: int | None = None  # muP: the width whose settings transfer (m = d_model / this)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "tied_embeddings":
                if not isinstance(value, bool):
                    raise InputError(f"model.tied_embeddings = {value!r} is not true or false")
                continue
            if f.name in ("parametrization", "mup_base_d_model"):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"model.{f.name} = {value!r} is not a positive integer")
        if self.d_model % self.n_heads:
            raise InputError(
                f"model.d_model = {self.d_model} is not divisible by model.n_heads = {self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise InputError(
                f"model.n_heads = {self.n_heads} is not a multiple of model.n_kv_heads = {self.n_kv_heads}"
            )
        self._check_parametrization()
        if self.head_dim % 2:
            # Rotary embeddings rotate pairs of features.
            raise InputError(
                f"model.d_model / model.n_heads = {self.head_dim} is odd; rotary embeddings need an even "
                "head size"
            )

    def _check_parametrization(self) -> None:
        if self.parametrization not in ("standard", "mup"):
            raise InputError(f"model.parametrization = {self.parametrization!r}: expected standard or mup")
        base = self.mup_base_d_model
        if self.parametrization == "standard":
            if base is not None:
                raise InputError(f"model.mup_base_d_model = {base!r} is for parametrization = \"mup\" only")
            return
        if isinstance(base, bool) or not isinstance(base, int) or base < 8:
            raise InputError(f"model.mup_base_d_model = {base!r}: muP needs the base width, a whole number of 8 or "
                             "more (the d_model its settings were tuned at)")
        if self.tied_embeddings:
            raise InputError("model.tied_embeddings = true with parametrization = \"mup\": muP needs a separate "
                             "output layer (its logits are scaled by 1 / width multiplier)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        """The fields; the parametrization only when it is not standard (records of earlier versions match)."""
        out = asdict(self)
        if self.parametrization == "standard":
            del out["parametrization"], out["mup_base_d_model"]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> ModelShape:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"model: unknown key '{unknown[0]}'; expected one of {sorted(known)}")
        return cls(**d)
