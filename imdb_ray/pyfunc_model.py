"""The code MLflow stores with every imdb_ray pyfunc model (models from code: no pickle)."""
from mlflow.models import set_model

from imdb_ray.pyfunc import BundleModel

set_model(BundleModel())
