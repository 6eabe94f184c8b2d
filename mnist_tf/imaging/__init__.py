"""Pictures: decode files and bytes (`decode`), and put any picture in MNIST's 28x28 form (`mnist_form`,
built from `ops`, in TFLite built-in ops)."""
