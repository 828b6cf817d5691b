/* Lets the module map find ghostcore.h through pkg-config's include path. */
#include <ghostcore.h>
