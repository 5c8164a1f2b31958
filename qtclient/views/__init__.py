"""Qt widgets: they show models and call the session; they never touch sockets."""
