"""Search operators: mutation, crossover, selection, Pareto front, novelty. Pure: no I/O, no
torch, seeded RNG passed in."""

from evotui.evolve.adaptive import AdaptiveWeights, improved, op_name
from evotui.evolve.entry import PARENT_STATUSES, Entry, eligible
from evotui.evolve.inheritance import inheritance_map
from evotui.evolve.keys import spec_key
from evotui.evolve.mutations import DECK, Mutation, MutationContext, new_id, register
from evotui.evolve.novelty import descriptor, novelty
from evotui.evolve.pareto import crowding_distance, dominates, nondominated_rank, pareto_front
from evotui.evolve.selection import Selector, get_selector
from evotui.evolve.selection.map_elites import features as elite_features
from evotui.evolve.variation import (
    Child,
    VariationError,
    compose,
    crossover,
    mutate,
    validate_model,
)

__all__ = [
    "DECK", "PARENT_STATUSES", "AdaptiveWeights", "Child", "Entry", "Mutation",
    "MutationContext", "Selector", "VariationError", "compose", "crossover", "crowding_distance",
    "descriptor", "dominates", "elite_features", "eligible", "get_selector", "improved",
    "inheritance_map", "mutate", "new_id", "nondominated_rank", "novelty", "op_name",
    "pareto_front", "register", "spec_key", "validate_model",
]
