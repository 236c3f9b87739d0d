"""Token-id conventions shared by the input pipeline, the models and the losses (LLaVA family).

`<image>` is not a vocabulary entry: the prompt builders write `IMAGE_TOKEN_INDEX` where the
visual tokens go and the model splices them in (`model/backbone/multimodal.py`); label positions
that are not supervised hold `IGNORE_INDEX` (`labels[i] = -100` as HF's `CrossEntropyLoss`
ignores it). Core: imports nothing of the project, so every layer may use it.
"""

IMAGE_TOKEN_INDEX = -200  # `tokenizer_image_token` / `preprocess_virst` placeholder id
IGNORE_INDEX = -100
