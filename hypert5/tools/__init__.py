"""Tools that measure the library, outside its core (the core never imports them):
the accelerator benchmark of the train step, the input pipeline's cost, copies of
the benchmarks in their real formats, memory plans for pods and phi's size."""
