// Shared prelude for every vkinfer compute shader: extensions and small helpers.
#extension GL_EXT_control_flow_attributes : enable
#extension GL_EXT_shader_explicit_arithmetic_types : enable
#extension GL_EXT_shader_16bit_storage : enable
#extension GL_EXT_shader_8bit_storage : enable

uint ceil_div(uint a, uint b) { return (a + b - 1u) / b; }
