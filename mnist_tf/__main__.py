from mnist_tf.cli import main

main()
