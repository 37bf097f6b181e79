"""The CNN: a pure factory with preprocessing (and training-time augmentation) inside the model.

Augmentation layers are part of the model and active only in training, so the same code runs
on any Keras backend and device, and serving feeds raw pixels exactly as training did.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import keras


class AugmentConfig(BaseModel):
    """Training-time augmentation (inactive at inference)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    flip: bool = Field(True, description="Random horizontal flip.")
    translate: float = Field(0.1, ge=0, le=0.5, description="Random shift, fraction of size.")
    zoom: float = Field(0.1, ge=0, le=0.5, description="Random zoom in or out, fraction.")
    rotate_degrees: float = Field(10.0, ge=0, le=45, description="Random rotation, degrees.")
    contrast: float = Field(0.2, ge=0, le=1, description="Random contrast change, fraction.")
    erase: float = Field(
        0.0, ge=0, le=1, description="Probability of erasing a random rectangle (0: off)."
    )
    crop: int = Field(
        0,
        ge=0,
        le=48,
        description="Train on random crops of this side (0: off), at the original scale.",
    )
    crop_inference: Literal["full", "center"] = Field(
        "full",
        description="What inference sees when training crops: the whole image (needs the "
        "global-average-pooling head) or the central crop.",
    )

    @classmethod
    def off(cls) -> AugmentConfig:
        """No augmentation at all."""
        return cls(flip=False, translate=0, zoom=0, rotate_degrees=0, contrast=0, erase=0, crop=0)


class NetworkConfig(BaseModel):
    """Shape of the network; part of the training config (shows in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filters: tuple[int, ...] = Field(
        (32, 64, 128), min_length=1, description="Filters of each conv block."
    )
    convs_per_block: int = Field(2, ge=1, le=4, description="3x3 convolutions per block.")
    batch_norm: bool = Field(False, description="BatchNorm after each convolution.")
    fused_batch_norm: bool = Field(
        False,
        description="Run BatchNorm through TensorFlow's fused kernel (more training images/s: "
        "bench/train.py, docs/model.md); the same variables and update rule.",
    )
    batch_norm_momentum: float = Field(
        0.99,
        ge=0.5,
        lt=1,
        description="Momentum of BatchNorm's moving statistics (what inference uses). 0.99 "
        "needs several hundred steps to forget the initial ones: lower for runs of a few "
        "hundred steps.",
    )
    head: Literal["flatten", "gap"] = Field(
        "flatten", description="Flatten the last block, or global-average-pool it."
    )
    dense_units: int = Field(128, ge=8, description="Units of the hidden dense layer.")
    conv_dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after each block.")
    dense_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout before the output.")
    augment: AugmentConfig = Field(
        default_factory=AugmentConfig.off, description="Training-time augmentation layers."
    )


def _augmentation(config: AugmentConfig, seed: int) -> list[keras.layers.Layer]:
    from keras import layers

    stack: list[keras.layers.Layer] = []
    if config.flip:
        stack.append(layers.RandomFlip("horizontal", seed=seed, name="aug_flip"))
    if config.rotate_degrees or config.zoom or config.translate:
        from model.inference.layers import RandomAffine

        # One warp that XLA compiles under every backend (Keras's own rotation, zoom and
        # translation layers switch jit off for the whole model).
        stack.append(
            RandomAffine(
                config.rotate_degrees, config.zoom, config.translate, seed=seed + 1,
                name="aug_affine",
            )
        )  # fmt: skip
    if config.crop:
        from model.inference.layers import TrainingCrop

        stack.append(TrainingCrop(config.crop, seed + 6, config.crop_inference, name="aug_crop"))
    if config.contrast:
        stack.append(
            layers.RandomContrast(
                config.contrast, value_range=(0, 1), seed=seed + 4, name="aug_contrast"
            )
        )
    if config.erase:
        stack.append(
            layers.RandomErasing(
                factor=config.erase, scale=(0.02, 0.2), value_range=(0, 1), seed=seed + 5,
                name="aug_erase",
            )
        )  # fmt: skip
    return stack


def build_model(
    config: NetworkConfig, input_shape: tuple[int, int, int], num_classes: int, seed: int = 0
) -> keras.Model:
    """Build an uncompiled VGG-style CNN that takes raw uint8 pixels.

    Rescaling to [0, 1], then the augmentation layers (training only), then blocks of
    ``convs_per_block`` x (conv 3x3 [+ BatchNorm] + ReLU), max-pool and dropout; then
    flatten or global average pooling, dense-ReLU, dropout and a float32 softmax (so mixed
    precision keeps the probabilities in full precision).

    Args:
        config: the network shape.
        input_shape: (height, width, channels) of one image.
        num_classes: size of the softmax output.
        seed: seed of the augmentation layers.

    Returns:
        The Keras model.
    """
    import keras
    from keras import layers

    norm = layers.BatchNormalization
    if config.fused_batch_norm:
        from model.inference.layers import FusedBatchNormalization as norm
    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for layer in _augmentation(config.augment, seed):
        x = layer(x)
    for index, filters in enumerate(config.filters):
        for conv in range(config.convs_per_block):
            name = f"conv{index}{chr(ord('a') + conv)}"
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=not config.batch_norm, name=name
            )(x)
            if config.batch_norm:
                x = norm(momentum=config.batch_norm_momentum, name=f"{name}_bn")(x)
            x = layers.ReLU()(x)
        # Global average pooling pools the last block itself; a max-pool before it would
        # only drop the odd row and column of a 5 x 5 map.
        if config.head == "flatten" or index < len(config.filters) - 1:
            x = layers.MaxPooling2D(2)(x)
        if config.conv_dropout:
            x = layers.Dropout(config.conv_dropout)(x)
    x = layers.GlobalAveragePooling2D()(x) if config.head == "gap" else layers.Flatten()(x)
    x = layers.Dense(config.dense_units, activation="relu")(x)
    x = layers.Dropout(config.dense_dropout)(x)
    # Logits and softmax as separate float32 layers: temperature scaling goes between them.
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="fer_cnn")


def with_temperature(
    model: keras.Model, temperature: float, flip_average: bool = False, shift: int = 0
) -> keras.Model:
    """The served model: logits divided by ``temperature`` before the softmax.

    Args:
        model: a model from :func:`build_model` (it has a ``logits`` layer).
        temperature: the fitted temperature (> 0).
        flip_average: average the logits of each image and its mirror image (test-time
            augmentation inside the model, so evaluation and serving see the same function;
            twice the inference FLOPs).
        shift: also average the four views shifted diagonally by this many pixels (0: none):
            with a centre-crop network and ``shift = (48 - crop) / 2`` these are its corner
            crops, so with ``flip_average`` it is the ten-crop evaluation (ten times the
            inference FLOPs).

    Returns:
        A model sharing ``model``'s layers and weights, whose probabilities are calibrated;
        its ``logits`` layer holds the (averaged) logits before the temperature.
    """
    import keras
    from keras import layers

    if flip_average or shift:
        from model.inference.layers import InferenceViews, MeanOverViews

        corners = [(-shift, -shift), (-shift, shift), (shift, -shift), (shift, shift)]
        views = InferenceViews([(0, 0), *(corners if shift else [])], flip_average, name="views")
        inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
        stacked = logits_model(model)(views(inputs))
        logits = MeanOverViews(views.count, dtype="float32", name="logits")(stacked)
    else:
        inputs, logits = model.input, model.get_layer("logits").output
    scaled = layers.Rescaling(1.0 / temperature, dtype="float32", name="temperature")(logits)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(scaled)
    return keras.Model(inputs, outputs, name=model.name)


def logits_model(model: keras.Model) -> keras.Model:
    """A view of ``model`` that outputs the uncalibrated logits.

    Args:
        model: a model from :func:`build_model` or :func:`with_temperature`.

    Returns:
        A model sharing its layers, ending at the ``logits`` layer.
    """
    import keras

    return keras.Model(model.input, model.get_layer("logits").output, name=f"{model.name}_logits")


def fold_batch_norm(
    model: keras.Model, config: NetworkConfig, input_shape: tuple[int, int, int], seed: int = 0
) -> keras.Model:
    """The same inference function with each BatchNorm folded into its convolution.

    At inference a BatchNorm is a per-channel affine map, so ``conv -> BN`` equals one
    convolution with scaled kernels and a bias. The folded network skips two passes over
    every feature map, which is most of the gap between the export and the arithmetic
    (the TFLite converter does not fold Keras 3 BatchNorm itself).

    Args:
        model: a model from :func:`build_model` with ``config`` (trained; any dtype policy).
        config: its network shape.
        input_shape: (height, width, channels) it was built with.
        seed: seed of its augmentation layers (inert at inference; kept for symmetry).

    Returns:
        A model from :func:`build_model` without BatchNorm (built under the current dtype
        policy), with the same inference outputs up to float rounding; ``model`` itself
        when it has no BatchNorm.
    """
    import numpy as np
    from keras import layers

    if not config.batch_norm:
        return model
    num_classes = model.get_layer("logits").units
    plain = config.model_copy(update={"batch_norm": False})
    folded = build_model(plain, input_shape, num_classes, seed)
    for layer in folded.layers:
        if isinstance(layer, layers.Conv2D):
            kernel = np.asarray(model.get_layer(layer.name).kernel, dtype=np.float64)
            norm = model.get_layer(f"{layer.name}_bn")
            gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in norm.get_weights())
            scale = gamma / np.sqrt(variance + norm.epsilon)
            layer.set_weights([kernel * scale, beta - mean * scale])
    source = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    target = [layer for layer in folded.layers if isinstance(layer, layers.Dense)]
    for mine, theirs in zip(target, source, strict=True):
        mine.set_weights(theirs.get_weights())
    return folded


def network_inside(served: keras.Model) -> keras.Model:
    """The trained network inside a served model (from :func:`with_temperature`).

    Args:
        served: a served model as saved (with or without test-time views).

    Returns:
        A model whose weights are the network's, in :func:`build_model`'s order: the served
        model itself without views, else the logits network the views feed.
    """
    if "views" in {layer.name for layer in served.layers}:
        return served.get_layer(f"{served.name}_logits")
    return served


def fold_served_model(
    served: keras.Model, config: NetworkConfig, input_shape: tuple[int, int, int], seed: int = 0
) -> keras.Model:
    """A served model (from :func:`with_temperature`) with its BatchNorm folded away.

    For a saved model whose training network is not at hand (an imported one): the network
    inside is found by its layer names, folded with :func:`fold_batch_norm`, and wrapped again
    with the same temperature and test-time views.

    Args:
        served: the served model as saved.
        config: the network shape it was built with.
        input_shape: (height, width, channels).
        seed: seed of its augmentation layers (inert at inference).

    Returns:
        The same inference function up to float rounding, without BatchNorm.
    """
    names = {layer.name for layer in served.layers}
    folded = fold_batch_norm(network_inside(served), config, input_shape, seed)
    temperature = 1.0 / float(served.get_layer("temperature").scale)
    if "views" not in names:
        return with_temperature(folded, temperature)
    views = served.get_layer("views")
    shift = max(abs(value) for shift in views.shifts for value in shift)
    return with_temperature(folded, temperature, views.flip, shift)
