"""The CNN: a pure factory with preprocessing inside the model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import keras


class NetworkConfig(BaseModel):
    """Shape of the network; part of the training config (shows in the Prefect UI)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    filters: tuple[int, ...] = Field(
        (32, 64, 128), min_length=1, description="Filters of each conv block (two convs each)."
    )
    dense_units: int = Field(128, ge=8, description="Units of the hidden dense layer.")
    conv_dropout: float = Field(0.25, ge=0.0, lt=1.0, description="Dropout after each block.")
    dense_dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout before the output.")


def build_model(
    config: NetworkConfig, input_shape: tuple[int, int, int], num_classes: int
) -> keras.Model:
    """Build an uncompiled VGG-style CNN that takes raw uint8 pixels.

    Blocks of conv-ReLU, conv-ReLU, max-pool, dropout; then dense-ReLU, dropout, softmax.
    Rescaling to [0, 1] is a layer of the model, so every consumer feeds raw pixels.

    Args:
        config: the network shape.
        input_shape: (height, width, channels) of one image.
        num_classes: size of the softmax output.

    Returns:
        The Keras model.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Rescaling(1.0 / 255.0)(inputs)
    for index, filters in enumerate(config.filters):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}a")(x)
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{index}b")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(config.conv_dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(config.dense_units, activation="relu")(x)
    x = layers.Dropout(config.dense_dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fer_cnn")
