// The C target has only a header; this file gives the compiler a translation unit.
#include "CLinuxUAPI.h"
