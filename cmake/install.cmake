# `cmake --install build --prefix P` puts the library, its headers, the CLI,
# the SentencePiece shim and the bundled models under P, with a CMake package
# so that another project finds it:
#
#   find_package(blip2 REQUIRED)          # CMAKE_PREFIX_PATH=P
#   target_link_libraries(app PRIVATE blip2::blip2)
include(CMakePackageConfigHelpers)

install(TARGETS blip2 blip2_shapes blip2_search EXPORT blip2Targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS blip2_spm LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS blip2_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/blip2/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/blip2
        FILES_MATCHING PATTERN "*.h")
# resolve_model_dir looks in <prefix>/share/blip2/models/shapes/opt.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/models/ DESTINATION ${CMAKE_INSTALL_DATADIR}/blip2/models)
# blip2 serve's default --web-root: <prefix>/share/blip2/web.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/apps/server/web/ DESTINATION ${CMAKE_INSTALL_DATADIR}/blip2/web
        PATTERN "node_modules" EXCLUDE)

list(JOIN BLIP2_PKG_MODULES " " BLIP2_PKG_MODULES_STR)
set(BLIP2_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/blip2)
install(EXPORT blip2Targets NAMESPACE blip2:: DESTINATION ${BLIP2_CMAKE_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/blip2Config.cmake.in
                              ${PROJECT_BINARY_DIR}/blip2Config.cmake INSTALL_DESTINATION ${BLIP2_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/blip2ConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/blip2Config.cmake ${PROJECT_BINARY_DIR}/blip2ConfigVersion.cmake
        DESTINATION ${BLIP2_CMAKE_DIR})
