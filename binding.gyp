{
  "targets": [
    {
      "target_name": "prefork",
      "sources": [
        "native/binding.cc",
        "native/channel.cc",
        "native/notify.cc",
        "native/reap.cc",
        "native/shm.cc",
        "native/socket.cc",
        "native/reuseport.cc",
        "native/spawn.cc",
        "native/watchdog.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra"],
      "xcode_settings": {
        "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
        "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
        "MACOSX_DEPLOYMENT_TARGET": "10.15"
      }
    }
  ]
}
