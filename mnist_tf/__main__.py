from mnist_tf.cli import main

if __name__ == "__main__":  # Not when multiprocessing re-imports this module in a child.
    main()
