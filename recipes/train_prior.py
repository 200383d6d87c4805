"""Train a prior over a trained mmvq model's codes (stage 2): a small transformers causal LM
(``LlamaForCausalLM``) over one id sequence per example, so that the model can *generate*
images and captions (unconditionally, text -> image, image -> text).

First train the tokenizer model (recipes/fuse_image_text.py), then, with no other arguments,
this trains the prior on the same built-in "shapes" data on the CPU:

    python recipes/fuse_image_text.py                  # -> outputs/fuse_image_text/final
    python recipes/train_prior.py                      # -> outputs/train_prior/final
    python recipes/train_prior.py --model DIR --max_steps 200 --output_dir /tmp/prior
    python recipes/train_prior.py run.yaml --max_steps 50          # a config file, then flags
    python recipes/train_prior.py --max_steps 1200 --resume_from_checkpoint latest  # same run, on
    python recipes/train_prior.py --seed 1 --overwrite_output_dir  # replaces the earlier run

An output_dir holding another run (other options, data, seed, model or prior size) is refused
with the fix; ``--overwrite_output_dir`` deletes that run's outputs (not the codes cache).
    mmvq generate outputs/fuse_image_text/final --prior outputs/train_prior/final --to image \
        --num-samples 10 --out samples/

Every option (the data flags are the tokenizer recipe's): --help.
"""

from mmvq.prior.recipe import prior_recipe_main
from mmvq.training.recipe import recipe_script

# Measured on the shared 2-core CPU (issue 10, phase 1): 800 steps of a 0.85M-parameter prior
# (PriorConfig's defaults) learn the shapes data's codes; the steps cost about 9 minutes of CPU
# with one thread.
DEFAULTS = dict(
    model="outputs/fuse_image_text/final",
    output_dir="outputs/train_prior",
    builtin_num_train=2048,
    builtin_num_eval=128,
    max_steps=800,
    threads=1,
)

if __name__ == "__main__":
    raise SystemExit(recipe_script(defaults=DEFAULTS, main=prior_recipe_main))
