"""Training a :class:`~mmvq.MultimodalVQ` with Hugging Face Accelerate: :func:`train`.

===============  =======================================================================
module           what it holds
===============  =======================================================================
``loop``         :func:`train`, :class:`TrainResult`, the step-by-step loop
``setup``        everything before the first step (accelerator, optimizers, resume)
``step``         the pieces of one optimizer step (generator loss, snapshot, history)
``inputs``       the data :func:`train` accepts, checked; its DataLoaders
``config``       :class:`TrainConfig`, every option
``run_dir``      :class:`RunDirectory`, the layout of the run's output directory
``checkpoint``   atomic checkpoints, exact resume, the model's shape fingerprint
``gan``          the GAN head: discriminators, generator loss
``balance``      modality balancers (static, uncertainty, GradNorm, DWA)
``align``        cross-modal code matching
``ema``          the exponential moving average of the weights
``logs``         windowed statistics and the JSON-lines log
``evaluate``     evaluation: metrics, translation scores, codebook statistics, samples
``recipe_args``  the recipes' options (HfArgumentParser groups)
``recipe``       the recipe runner (build, load, train, save, summarise)
===============  =======================================================================
"""

from mmvq.training.config import TrainConfig
from mmvq.training.loop import TrainingError, TrainResult, train
from mmvq.training.run_dir import RunDirectory

__all__ = ["RunDirectory", "TrainConfig", "TrainResult", "TrainingError", "train"]
