// The header holds nearly everything; this file gives the compiler a translation unit and the
// constants whose headers cannot be part of the Swift module (see the header).
#include "CLinuxUAPI.h"
#include <linux/mman.h>

const int CUAPI_MAP_HUGE_SHIFT = MAP_HUGE_SHIFT;
const int CUAPI_MAP_HUGE_2MB = MAP_HUGE_2MB;
const int CUAPI_MAP_HUGE_1GB = MAP_HUGE_1GB;
