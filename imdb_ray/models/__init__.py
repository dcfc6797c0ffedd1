from imdb_ray.models.registry import MODELS, check_model_args, get_model, list_models, register_model

__all__ = ["MODELS", "check_model_args", "get_model", "list_models", "register_model"]
