"""The mutation operators. Importing this package registers every group in :data:`DECK`."""

from evotui.evolve.mutations import (  # noqa: F401  (registers the operators)
    attention,
    attn_options,
    blocks,
    embedding,
    extras,
    ffn,
    memory,
    norm,
    recurrence,
    ssm,
)
from evotui.evolve.mutations.base import (
    DECK,
    BlockMutation,
    Mutation,
    MutationContext,
    Skip,
    operators,
    register,
)
from evotui.evolve.mutations.helpers import new_id

__all__ = ["DECK", "BlockMutation", "Mutation", "MutationContext", "Skip", "new_id",
           "operators", "register"]
