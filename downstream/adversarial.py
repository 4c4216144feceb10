"""Adversarial training on the word embeddings (FGM, Miyato et al. 2017), bert4keras's one-liner.

    model.compile(optimizer, loss, metrics)
    adversarial_training(model, "Embedding-Token", epsilon=0.5)       # then model.fit as usual

Each training step then:
  1. computes g, the gradient of the batch loss with respect to the whole word-embedding matrix E
     [V, E] (rows of tokens absent from the batch are zero);
  2. perturbs E by delta = epsilon * g / (||g|| + 1e-8), one Frobenius norm over the matrix;
  3. runs the model's ordinary training step on the perturbed embeddings: loss, gradients and the
     optimizer update all come from the perturbed batch (its loss and metrics are the ones logged);
  4. removes delta from E again (the optimizer's own update to E stays).
That is bert4keras's `adversarial_training` (examples/task_iflytek_adversarial_training.py): the
update follows the adversarial loss only. A step costs about two forward and two backward passes.
"""

import keras
import tensorflow as tf

from downstream.backbone import backbone_of

# The layer name bert4keras gives the word embeddings; accepted for scripts written for it.
BERT4KERAS_EMBEDDING = "Embedding-Token"


def adversarial_training(model, embedding_name=None, epsilon: float = 1.0):
    """Makes `model.fit` train `model` with FGM perturbations of its word embeddings.

    Args:
      model: a Keras model built on `build_transformer_model` (compiled or not; compile it before
        fit as usual).
      embedding_name: None or "Embedding-Token" for the BERT word embeddings, or the path of
        another embedding variable of the model (e.g. "my_layer/embeddings").
      epsilon: the norm of the perturbation; 0 leaves training unchanged. bert4keras's examples use
        0.5 to 1.

    Returns:
      The embedding variable that is perturbed.

    Example:
      model = keras.Model(bert.inputs, keras.layers.Dense(2, activation="softmax")(bert.output))
      model.compile(keras.optimizers.Adam(2e-5), "sparse_categorical_crossentropy")
      adversarial_training(model, epsilon=0.5)
      model.fit(x, y, epochs=3)
    """
    if epsilon < 0:
        raise ValueError("epsilon=%s: the perturbation norm must be >= 0." % epsilon)
    variable = _embeddings(model, embedding_name)
    if epsilon == 0:
        return variable
    plain_step = model.train_step

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        gradient = tf.convert_to_tensor(tape.gradient(loss, variable))     # [V, E], dense
        delta = tf.cast(epsilon, gradient.dtype) * gradient / (tf.norm(gradient) + 1e-8)
        variable.assign_add(delta)
        logs = plain_step(data)
        variable.assign_sub(delta)
        return logs

    model.train_step = train_step
    model.train_function = None     # fit builds its step function again, around this step
    return variable


def _embeddings(model, name):
    if name in (None, BERT4KERAS_EMBEDDING):
        return backbone_of(model).bert.embeddings.word_embeddings
    found = [w for w in model.weights if w.path == name or w.path.endswith("/" + name)]
    if len(found) != 1:
        raise ValueError("embedding_name=%r matches %d variables of %s; give one of: %s."
                         % (name, len(found), model.name, ", ".join(w.path for w in model.weights[:8])))
    return found[0]
