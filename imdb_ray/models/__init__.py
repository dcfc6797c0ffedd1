from imdb_ray.models.families import (FAMILIES, Family, build_model, load_trainable_state, seed_independent,
                                      trainable_state)
from imdb_ray.models.registry import MODELS, check_model_args, get_model, list_models, register_model

__all__ = ["FAMILIES", "MODELS", "Family", "build_model", "check_model_args", "get_model", "list_models",
           "load_trainable_state", "register_model", "seed_independent", "trainable_state"]
