"""NSA schedules that the torch-free family record and the trainer share."""

CPU_DEMO_EPOCHS = 60  # the epochs of NSA_CPU_DEMO (trainer), the schedule of `edge-ad demo --model nsa`
