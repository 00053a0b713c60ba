import warnings

# peft (0.21, PeftModel.__init__) reads `model.is_gradient_checkpointing`, which transformers 5 deprecated
# for `is_activation_checkpointing`: a FutureWarning in every trial that the user cannot act on. By
# message, so any other FutureWarning still shows.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
